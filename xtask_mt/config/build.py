"""The one place that turns a composed config into objects (datasets, model, losses, ...).

Tasks come from the task registry and task weightings from their config's `_target_`, so
adding either needs no edit here.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from xtask_mt.config.schedules import build_lr_schedule
from xtask_mt.data.cityscapes import Cityscapes
from xtask_mt.data.device_loader import DeviceLoader
from xtask_mt.data.device_split import DeviceSplit, load_split
from xtask_mt.data.frames import FrameDataset
from xtask_mt.data.labels import NYUV2_CLASS_NAMES
from xtask_mt.data.nyuv2 import NYUv2
from xtask_mt.data.sampling import ShardSampler
from xtask_mt.data.splits import BENCHMARK_SPLITS
from xtask_mt.data.synthetic import SyntheticScenes
from xtask_mt.data.transforms import FieldRule, TrainAugmentation, depth_scaling_for
from xtask_mt.errors import ConfigError
from xtask_mt.losses import ConsistencyTerm, TaskObjective, against_ground_truth
from xtask_mt.metrics import ConsistencyEnergy, MetricCollection
from xtask_mt.models import (
    TRANSFER_ARCHS,
    CrossTaskModel,
    ResNetEncoder,
    TransferEdge,
    UNetDecoder,
)
from xtask_mt.models.adamtnet import build_adamtnet
from xtask_mt.models.deeplab import build_deeplabv3plus
from xtask_mt.models.mtan import build_mtan
from xtask_mt.models.schemes import SHARING_SCHEMES
from xtask_mt.models.separate import separate_networks
from xtask_mt.models.timm_encoder import TimmEncoder
from xtask_mt.tasks import Task, edge_name, get_task
from xtask_mt.weighting import TaskWeighting

log = logging.getLogger(__name__)

# keys of a weighting config that are not arguments of its class
_WEIGHTING_SETTINGS = ("name", "lr")


_DATASETS: dict[str, type] = {"synthetic": SyntheticScenes, "cityscapes": Cityscapes,
                              "nyuv2": NYUv2}


def check_dataset_tasks(cfg: DictConfig) -> None:
    """Every task's ground truth must be among the samples the dataset gives."""
    kind = _DATASETS.get(str(cfg.dataset.name))
    for task in cfg.model.tasks:
        missing = set(get_task(task).sample_keys) - set(getattr(kind, "provides", ()))
        if kind is not None and missing:
            raise ConfigError(f"model.tasks has {task!r} but dataset={cfg.dataset.name} has no "
                              f"{'/'.join(sorted(missing))} ground truth; drop the task or pick "
                              "a dataset that has it")


def build_dataset(cfg: DictConfig, split: str, augment: bool = True) -> Dataset:
    """Dataset of `split` ('train', 'val', or 'test' where `dataset_splits` lists it);
    `augment=False` turns the training split's augmentation off (trainer.overfit_batches)."""
    d = cfg.dataset
    tasks = tuple(cfg.model.tasks)
    check_dataset_tasks(cfg)
    if d.name == "synthetic":
        size = {"train": d.train_size, "val": d.val_size}.get(split, d.get("test_size"))
        return SyntheticScenes(split, size=size, height=d.height, width=d.width, seed=d.seed,
                               normals="normal" in tasks)
    if d.name in ("cityscapes", "nyuv2"):
        return _build_file_dataset(d, split, tasks, augment)
    raise ValueError(f"unknown dataset {d.name!r}")


def _build_file_dataset(d: DictConfig, split: str, tasks: tuple[str, ...],
                        augment: bool) -> Dataset:
    """Cityscapes or NYUv2, cached unless `dataset.cache=false`, augmented in training."""
    root = Path(d.root)
    cache_dir = (Path(d.cache_dir) if d.get("cache_dir") else root / "prepared") if d.cache \
        else None
    kind = Cityscapes if d.name == "cityscapes" else NYUv2
    transform = None
    if split == "train" and augment and d.augment.enabled:
        scaling = depth_scaling_for(kind.depth_target, bool(d.augment.legacy_depth_scaling))
        rules: dict[str, FieldRule] = {}
        for task in tasks:
            rules.update(get_task(task).field_rules(scaling))
        transform = TrainAugmentation(flip=bool(d.augment.flip), scales=list(d.augment.scales),
                                      rules=rules)
    common = {"transform": transform, "cache_dir": cache_dir, "height": int(d.height),
              "width": int(d.width)}
    if kind is Cityscapes:
        return Cityscapes(root, split, num_classes=int(d.num_classes), **common)
    common["normals"] = "normal" in tasks
    if int(d.num_classes) != len(NYUV2_CLASS_NAMES):
        raise ValueError(f"NYUv2 has 13 classes; got dataset.num_classes={d.num_classes}")
    return NYUv2(root, split, **common)


def _seed_worker(worker_id: int) -> None:
    """Give every DataLoader worker its own numpy/random stream derived from torch's seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(cfg: DictConfig, dataset: Dataset, train: bool, rank: int = 0,
                 world_size: int = 1, pin_memory: bool = False,
                 shuffle: bool = True) -> DataLoader:
    """DataLoader with seeded shuffling; the last partial batch is dropped in training only.
    `shuffle=False` gives training the same batches in the same order every epoch
    (trainer.overfit_batches).

    `dataset.batch_size` is per process. Training shuffles with a permutation seeded by
    trainer.seed + epoch (call `loader.sampler.set_epoch(epoch)`) that is dealt out to the
    `world_size` processes, so N processes with batch B see, step by step, the same samples
    as one process with batch N*B. Evaluation gives each process its own shard.
    """
    d = cfg.dataset
    generator = torch.Generator()
    generator.manual_seed(int(cfg.trainer.seed))
    sampler: Sampler[int]
    if train:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                     seed=int(cfg.trainer.seed), drop_last=world_size > 1)
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    return DataLoader(
        dataset, batch_size=d.batch_size, sampler=sampler, drop_last=train and
        len(sampler) > d.batch_size, num_workers=d.num_workers, worker_init_fn=_seed_worker,
        generator=generator, persistent_workers=d.num_workers > 0, pin_memory=pin_memory,
    )


def check_device_cache(cfg: DictConfig) -> None:
    """dataset.device_cache=true puts a file dataset's preparation cache on the device, so
    that dataset needs dataset.cache=true."""
    d = cfg.dataset
    kind = _DATASETS.get(str(d.name))
    if d.get("device_cache", False) and kind is not None and issubclass(kind, FrameDataset) \
            and not d.get("cache", False):
        raise ConfigError(f"dataset.device_cache=true loads the preparation cache of dataset="
                          f"{d.name} onto the device, but dataset.cache=false; set "
                          "dataset.cache=true (or dataset.device_cache=false)")


def cache_on_device(cfg: DictConfig, device: torch.device, *loaders: DataLoader
                    ) -> tuple[DataLoader | DeviceLoader, ...]:
    """`loaders` as they are, or with dataset.device_cache=true each one's split loaded once
    onto `device` and its batches made there (data.device_loader): the same sampler and batch
    size and, for a fixed seed, the same augmentation as the DataLoader with num_workers=0.
    Loaders of one dataset share its copy."""
    d = cfg.dataset
    if not d.get("device_cache", False):
        return loaders
    check_device_cache(cfg)
    splits: dict[int, DeviceSplit] = {}
    for loader in loaders:
        if id(loader.dataset) not in splits:
            splits[id(loader.dataset)] = load_split(loader.dataset, device)
    held = sum(split.nbytes for split in splits.values()) / 2**20
    ignored = f"; dataset.num_workers={d.num_workers} is ignored" if d.num_workers else ""
    log.info("dataset.device_cache: batches are made on %s from %.0f MiB held there%s",
             device, held, ignored)
    return tuple(DeviceLoader.like(loader, splits[id(loader.dataset)]) for loader in loaders)


# Configs saved before transfer nets became edges name neither the edges nor their weights:
# they had the seed's two, weighted by loss.alpha and loss.gamma.
_SEED_EDGES = {"seg_to_depth": ("seg", "depth", "alpha"), "depth_to_seg": ("depth", "seg", "gamma")}

# Model settings added since the first release, with the value that stands for what a
# config (or checkpoint) written before them had.
LEGACY_MODEL_SETTINGS: dict[str, Any] = {"arch": "resnet_unet",
                                         "decoder_align_corners": False,
                                         "transfer.arch": "unet",
                                         "decoder_bias": "head"}


# Loss settings added since the first release, with the value that stands for what a config
# (or checkpoint) written before them trained with.
LEGACY_LOSS_SETTINGS: dict[str, Any] = {"label_smoothing_rule": "torch",
                                        "consistency_target": "prediction"}


def seed_edge_pairs() -> list[list[str]]:
    """The seed's two transfer edges as [source, target] pairs, which configs and
    checkpoints written before edges were configurable had."""
    return [[s, t] for s, t, _ in _SEED_EDGES.values()]


def upgrade_saved_config(cfg: DictConfig) -> DictConfig:
    """`cfg`, or a copy completed where an older saved config (of a run to evaluate) lacks
    settings added since: the seed's edges and weights, LEGACY_MODEL_SETTINGS and
    LEGACY_LOSS_SETTINGS."""
    missing = [key for key in LEGACY_MODEL_SETTINGS
               if OmegaConf.select(cfg.model, key) is None]
    missing_loss = [key for key in LEGACY_LOSS_SETTINGS if key not in cfg.loss]
    if "edges" in cfg.model.transfer and "consistency" in cfg.loss and not missing \
            and not missing_loss:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        if "edges" not in cfg.model.transfer or "consistency" not in cfg.loss:
            cfg.model.transfer.edges = seed_edge_pairs()
            cfg.loss.consistency = {edge: cfg.loss[weight]
                                    for edge, (_, _, weight) in _SEED_EDGES.items()}
        for key in missing:
            OmegaConf.update(cfg.model, key, LEGACY_MODEL_SETTINGS[key])
        for key in missing_loss:
            cfg.loss[key] = LEGACY_LOSS_SETTINGS[key]
    return cfg


def decoder_bias(cfg: DictConfig) -> str:
    """model.decoder_bias; a model config that does not name it has the method's (`seed`)."""
    return str(cfg.model.get("decoder_bias", "seed"))


def transfer_edges(cfg: DictConfig) -> list[tuple[str, str]]:
    """The (source, target) pairs of `model.transfer.edges`, none when transfer is off."""
    m = cfg.model
    if not bool(m.transfer.enabled):
        return []
    return [(str(source), str(target)) for source, target in m.transfer.edges]


def encoder_library(encoder: DictConfig) -> str:
    """Where the `encoder` group's trunk comes from: 'timm' (encoder=timm) or 'torchvision'
    (the ResNets, and configs saved before timm backbones existed)."""
    return str(encoder.get("library", "torchvision"))


def _optional_list(value: Any) -> list | None:
    return None if value is None else list(value)


def encoder_spec(encoder: DictConfig) -> dict[str, Any]:
    """The encoder settings a checkpoint's weights depend on."""
    if encoder_library(encoder) != "timm":
        return {"encoder.depth": int(encoder.depth)}
    kwargs = encoder.get("model_kwargs")
    return {"encoder.library": "timm", "encoder.name": str(encoder.name),
            "encoder.img_size": _optional_list(encoder.get("img_size")),
            "encoder.out_indices": _optional_list(encoder.get("out_indices")),
            "encoder.model_kwargs": OmegaConf.to_container(kwargs) if kwargs else {}}


def without_pretrained_weights(cfg: DictConfig) -> DictConfig:
    """A copy of `cfg` whose encoder starts from random weights: for a model whose weights
    come from a checkpoint, so that rebuilding it reads no weights file and waits on no
    network."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.encoder.pretrained = False
        cfg.encoder.weights_path = None
    return cfg


def build_encoder(cfg: DictConfig) -> nn.Module:
    """The `encoder` group's trunk: a torchvision ResNet or any timm backbone, each giving
    `channels` and `strides` of the maps it returns (shallowest first)."""
    e = cfg.encoder
    if encoder_library(e) != "timm":
        return ResNetEncoder(depth=int(e.depth), pretrained=bool(e.pretrained),
                             weights_path=e.get("weights_path"))
    kwargs = e.get("model_kwargs")
    encoder = TimmEncoder(str(e.name), pretrained=bool(e.pretrained),
                          weights_path=e.get("weights_path"),
                          img_size=_optional_list(e.get("img_size")),
                          out_indices=_optional_list(e.get("out_indices")),
                          model_kwargs=OmegaConf.to_container(kwargs) if kwargs else None)
    deepest = max(encoder.strides)
    height, width = int(cfg.dataset.height), int(cfg.dataset.width)
    if height % deepest or width % deepest:
        raise ConfigError(f"encoder.name={e.name} downsamples {deepest}x (its feature strides "
                          f"are {list(encoder.strides)}): dataset.height and dataset.width must "
                          f"be multiples of {deepest}, got {height}x{width}")
    return encoder


def _resnet_unet(cfg: DictConfig, heads: dict[str, int]
                 ) -> tuple[nn.Module, dict[str, nn.Module]]:
    """The `encoder` group's trunk (a ResNet or a timm backbone) and a U-Net decoder per
    task, built for the channels and strides of the trunk's maps."""
    m = cfg.model
    encoder = build_encoder(cfg)
    return encoder, {task: UNetDecoder(encoder.channels, channels, int(m.decoder_width),
                                       bool(m.decoder_align_corners), encoder.strides,
                                       decoder_bias(cfg))
                     for task, channels in heads.items()}


def _mtan(cfg: DictConfig, heads: dict[str, int]) -> tuple[nn.Module, dict[str, nn.Module]]:
    """SegNet-MTAN: shared SegNet and an attention branch per task."""
    trunk, branches = build_mtan(heads)
    return trunk, dict(branches)


def _adamtnet(cfg: DictConfig, heads: dict[str, int]) -> tuple[nn.Module, dict[str, nn.Module]]:
    """AdaMT-Net, whose attention weights are sized for the batch and resolution."""
    d = cfg.dataset
    encoder, decoders = build_adamtnet(heads, int(d.batch_size), int(d.height), int(d.width))
    return encoder, dict(decoders)


def _deeplabv3plus(cfg: DictConfig, heads: dict[str, int]
                   ) -> tuple[nn.Module, dict[str, nn.Module]]:
    """Dilated ResNet (`encoder` group, model.output_stride) and a DeepLabV3+ head per task."""
    e = cfg.encoder
    trunk, decoders = build_deeplabv3plus(heads, int(e.depth), int(cfg.model.output_stride),
                                          bool(e.pretrained), e.get("weights_path"))
    return trunk, dict(decoders)


def _sharing_scheme(cfg: DictConfig, heads: dict[str, int]
                    ) -> tuple[nn.Module, dict[str, nn.Module]]:
    """Cross-stitch, MMoE, CGC, PLE, DSelect-k or LTB over ResNet backbones (`encoder`
    group) with a U-Net decoder per task; `model.sharing.*` are the scheme's arguments."""
    e, m, d = cfg.encoder, cfg.model, cfg.dataset
    builder = SHARING_SCHEMES[str(m.arch)]
    options = OmegaConf.to_container(m.get("sharing") or {}, resolve=True)
    known = list(inspect.signature(builder).parameters)[4:]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"model.sharing.{unknown[0]} is not a setting of model={m.arch}; "
                          f"its settings are {known}")
    encoder = functools.partial(ResNetEncoder, depth=int(e.depth), pretrained=bool(e.pretrained),
                                weights_path=e.get("weights_path"))
    decoder = functools.partial(UNetDecoder, width=int(m.decoder_width),
                                align_corners=bool(m.decoder_align_corners),
                                bias=decoder_bias(cfg))
    try:
        return builder(heads, encoder, decoder, (int(d.height), int(d.width)), **options)
    except ValueError as exc:
        raise ConfigError(f"model={m.arch}: {exc}") from exc


ARCHITECTURES: dict[str, Callable[[DictConfig, dict[str, int]],
                                  tuple[nn.Module, dict[str, nn.Module]]]] = {
    "resnet_unet": _resnet_unet, "mtan": _mtan, "adamtnet": _adamtnet,
    "deeplabv3plus": _deeplabv3plus,
    **dict.fromkeys(SHARING_SCHEMES, _sharing_scheme),
}
"""model.arch -> (config, output channels per task) -> (trunk, head per task)"""

# model.arch values whose trunk is built from the `encoder` group (a ResNet; one trunk of it
# per expert or task for the sharing schemes)
USES_ENCODER_GROUP = ("resnet_unet", *SHARING_SCHEMES)
# model.arch values whose trunk can be a timm backbone (encoder=timm)
TAKES_TIMM = ("resnet_unet",)


def build_model(cfg: DictConfig, num_classes: int) -> CrossTaskModel:
    """Trunk and heads of `model.arch`, edges from the task registry."""
    m = cfg.model
    heads = {task: get_task(task).out_channels(num_classes) for task in m.tasks}
    arch = str(m.get("arch", "resnet_unet"))
    if arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch={arch} is not one of {sorted(ARCHITECTURES)}")
    if bool(m.get("separate_trunks", False)):  # single-task networks side by side
        networks = {task: ARCHITECTURES[arch](cfg, {task: channels})
                    for task, channels in heads.items()}
        trunk, decoders = separate_networks({task: (own_trunk, own_heads[task]) for task,
                                             (own_trunk, own_heads) in networks.items()})
    else:
        trunk, decoders = ARCHITECTURES[arch](cfg, heads)
    edges = [TransferEdge(edge_name(source, target), source, target, heads[source],
                          heads[target], get_task(source).transfer_input)
             for source, target in transfer_edges(cfg)]
    activations = {task: get_task(task).head_activation for task in m.tasks
                   if type(get_task(task)).head_activation is not Task.head_activation}
    transfer_net = functools.partial(TRANSFER_ARCHS[str(m.transfer.arch)],
                                     batch_norm=bool(m.transfer.batch_norm),
                                     wider=bool(m.transfer.wider))
    return CrossTaskModel(trunk, decoders, edges, transfer_net, activations)


def _loss_choice(cfg: DictConfig, group: str, default: str) -> str:
    """The option picked in config group loss/<group>, or `default` where there is none."""
    node = cfg.loss.get(group)
    return str(node.name) if node is not None else default


def consistency_target(cfg: DictConfig) -> str:
    """loss.consistency_target; configs saved before it trained towards the prediction."""
    return str(cfg.loss.get("consistency_target", "prediction"))


def build_objective(cfg: DictConfig) -> TaskObjective:
    """Direct loss of each task, and a consistency term per edge weighted by
    `loss.consistency.<edge>` (`loss.alpha` and `loss.gamma` for the seed's two edges): the
    transferred prediction against the target task's detached direct prediction, or with
    `loss.consistency_target=label` against its ground truth by its direct loss."""
    tasks = {name: get_task(name) for name in cfg.model.tasks}
    direct = {name: task.direct_loss(_loss_choice(cfg, name, task.direct_losses[0]))
              for name, task in tasks.items()}
    terms = []
    against_labels = consistency_target(cfg) == "label"
    for source, target in transfer_edges(cfg):
        task = tasks[target]
        edge = edge_name(source, target)
        options = {key: cfg.loss[key] for key in task.consistency_options if key in cfg.loss}
        loss = against_ground_truth(direct[target]) if against_labels else task.consistency_loss(
            _loss_choice(cfg, f"t{target}", task.consistency_losses[0]), **options)
        terms.append(ConsistencyTerm(edge, source, target,
                                     float(cfg.loss.consistency[edge]), loss))
    return TaskObjective(direct, {name: task.consistency_target for name, task in tasks.items()},
                         terms)


def build_metrics(cfg: DictConfig, num_classes: int,
                  device: torch.device | str) -> MetricCollection:
    """One accumulator per task, each told the edges whose predictions target it, and the
    consistency energy over the edges (when there are any)."""
    incoming: dict[str, tuple[str, ...]] = {}
    for source, target in transfer_edges(cfg):
        incoming[target] = (*incoming.get(target, ()), edge_name(source, target))
    edges = {edge_name(source, target): (target, get_task(target).energy_term)
             for source, target in transfer_edges(cfg)}
    return MetricCollection({task: get_task(task).metrics(num_classes, device,
                                                          incoming.get(task, ()))
                             for task in cfg.model.tasks}, incoming,
                            ConsistencyEnergy(edges, device) if edges else None)


def build_weighting(cfg: DictConfig, tasks: tuple[str, ...]) -> TaskWeighting:
    """The class named by `weighting._target_`, given the tasks and the config's other
    keys (but `name` and `lr`, which are the project's)."""
    w = cfg.weighting
    params = {k: v for k, v in OmegaConf.to_container(w, resolve=True).items()
              if k not in _WEIGHTING_SETTINGS}
    if "_target_" not in params:
        raise ConfigError(f"weighting={w.get('name')} has no _target_: the weighting config "
                          "must name its class, e.g. _target_: xtask_mt.weighting.fixed."
                          "FixedWeighting")
    try:
        weighting = instantiate(params, tasks=tasks, _convert_="all")
    except InstantiationException as exc:
        reason = str(exc.__cause__ or exc).splitlines()[0]
        raise ConfigError(f"invalid config for weighting={w.get('name')} "
                          f"({params['_target_']}, its arguments are the keys weighting.*): "
                          f"{reason}") from exc
    if not isinstance(weighting, TaskWeighting):
        raise ConfigError(f"weighting._target_={params['_target_']} is not a TaskWeighting")
    return weighting


def build_optimizer(cfg: DictConfig, model: nn.Module,
                    weighting: TaskWeighting) -> torch.optim.Optimizer:
    """Model parameters, plus the weighting's learnable weights at their own learning rate."""
    o = cfg.optimizer
    groups: list[dict] = [{"params": list(model.parameters())}]
    weighting_params: Iterable[nn.Parameter] = list(weighting.parameters())
    if weighting_params:
        lr = cfg.weighting.get("lr")
        groups.append({"params": weighting_params, "lr": float(lr if lr is not None else o.lr)})
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=float(o.lr), betas=tuple(o.betas),
                                weight_decay=float(o.weight_decay))
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=float(o.lr), momentum=float(o.momentum),
                               weight_decay=float(o.weight_decay), nesterov=bool(o.nesterov))
    raise ValueError(f"unknown optimizer {o.name!r}")


def build_scheduler(cfg: DictConfig,
                    optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """The `scheduler` group's schedule over trainer.epochs (see config.schedules)."""
    return build_lr_schedule(cfg.scheduler, int(cfg.trainer.epochs), optimizer)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name} but no CUDA device is available; use "
                         "trainer.device=cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dataset_splits(cfg: DictConfig) -> tuple[str, ...]:
    """Splits `cfg.dataset` provides (`dataset.splits`); the real benchmarks have train/val."""
    return tuple(cfg.dataset.get("splits") or BENCHMARK_SPLITS)
