"""The one place that turns a composed config into objects (datasets, model, losses, ...)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from xtask_mt.data.cityscapes import Cityscapes
from xtask_mt.data.labels import NYUV2_CLASS_NAMES
from xtask_mt.data.nyuv2 import NYUv2
from xtask_mt.data.sampling import ShardSampler
from xtask_mt.data.synthetic import SyntheticScenes
from xtask_mt.data.transforms import TrainAugmentation, depth_scaling_for
from xtask_mt.losses import CrossTaskLoss
from xtask_mt.models import CrossTaskModel, ResNetEncoder
from xtask_mt.models.multitask import TASKS
from xtask_mt.weighting import (
    FixedWeighting,
    GradNormWeighting,
    TaskWeighting,
    UncertaintyWeighting,
)


def build_dataset(cfg: DictConfig, split: str) -> Dataset:
    """Dataset of `split` ('train', 'val', or 'test' where `dataset_splits` lists it)."""
    d = cfg.dataset
    if d.name == "synthetic":
        size = {"train": d.train_size, "val": d.val_size}.get(split, d.get("test_size"))
        return SyntheticScenes(split, size=size, height=d.height, width=d.width, seed=d.seed)
    if d.name in ("cityscapes", "nyuv2"):
        return _build_file_dataset(d, split)
    raise ValueError(f"unknown dataset {d.name!r}")


def _build_file_dataset(d: DictConfig, split: str) -> Dataset:
    """Cityscapes or NYUv2, cached unless `dataset.cache=false`, augmented in training."""
    root = Path(d.root)
    cache_dir = (Path(d.cache_dir) if d.get("cache_dir") else root / "prepared") if d.cache \
        else None
    kind = Cityscapes if d.name == "cityscapes" else NYUv2
    transform = None
    if split == "train" and d.augment.enabled:
        transform = TrainAugmentation(flip=bool(d.augment.flip), scales=list(d.augment.scales),
                                      depth_scaling=depth_scaling_for(
                                          kind.depth_target, bool(d.augment.legacy_depth_scaling)))
    common = {"transform": transform, "cache_dir": cache_dir, "height": int(d.height),
              "width": int(d.width)}
    if kind is Cityscapes:
        return Cityscapes(root, split, num_classes=int(d.num_classes), **common)
    if int(d.num_classes) != len(NYUV2_CLASS_NAMES):
        raise ValueError(f"NYUv2 has 13 classes; got dataset.num_classes={d.num_classes}")
    return NYUv2(root, split, **common)


def _seed_worker(worker_id: int) -> None:
    """Give every DataLoader worker its own numpy/random stream derived from torch's seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(cfg: DictConfig, dataset: Dataset, train: bool, rank: int = 0,
                 world_size: int = 1, pin_memory: bool = False) -> DataLoader:
    """DataLoader with seeded shuffling; the last partial batch is dropped in training only.

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
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                     seed=int(cfg.trainer.seed), drop_last=world_size > 1)
    else:
        sampler = ShardSampler(len(dataset), rank, world_size)
    return DataLoader(
        dataset, batch_size=d.batch_size, sampler=sampler, drop_last=train and
        len(sampler) > d.batch_size, num_workers=d.num_workers, worker_init_fn=_seed_worker,
        generator=generator, persistent_workers=d.num_workers > 0, pin_memory=pin_memory,
    )


def build_model(cfg: DictConfig, num_classes: int) -> CrossTaskModel:
    """Model from `cfg.encoder` and `cfg.model`."""
    e, m = cfg.encoder, cfg.model
    encoder = ResNetEncoder(depth=int(e.depth), pretrained=bool(e.pretrained),
                            weights_path=e.get("weights_path"))
    return CrossTaskModel(
        encoder, num_classes=num_classes, tasks=tuple(m.tasks), transfer=bool(m.transfer.enabled),
        transfer_batch_norm=bool(m.transfer.batch_norm), transfer_wider=bool(m.transfer.wider),
        decoder_width=int(m.decoder_width),
    )


def build_criterion(cfg: DictConfig) -> CrossTaskLoss:
    loss = cfg.loss
    return CrossTaskLoss(depth=loss.depth.name, tdepth=loss.tdepth.name, tseg=loss.tseg.name,
                         alpha=float(loss.alpha), gamma=float(loss.gamma),
                         label_smoothing=float(loss.label_smoothing))


def build_weighting(cfg: DictConfig, model: CrossTaskModel) -> TaskWeighting:
    w = cfg.weighting
    if w.name == "fixed":
        # weights of tasks a single-task model lacks are dropped; unknown names still fail
        weights = {k: v for k, v in (w.get("weights") or {}).items()
                   if k in model.tasks or k not in TASKS}
        return FixedWeighting(model.tasks, weights=weights)
    if w.name == "uncertainty":
        return UncertaintyWeighting(model.tasks, init=float(w.init))
    if w.name == "gradnorm":
        return GradNormWeighting(model.tasks, model.encoder.last_shared_parameters(),
                                 asymmetry=float(w.asymmetry))
    raise ValueError(f"unknown weighting {w.name!r}")


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
    s = cfg.scheduler
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(s.step_size),
                                           gamma=float(s.gamma))


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
    return tuple(cfg.dataset.get("splits") or ("train", "val"))
