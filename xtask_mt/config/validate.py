"""Check every config value before any work starts, naming the key, value and accepted range."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from xtask_mt.config.build import (
    ARCHITECTURES,
    TAKES_TIMM,
    build_weighting,
    check_dataset_tasks,
    check_device_cache,
    dataset_splits,
    encoder_library,
    transfer_edges,
)
from xtask_mt.config.schedules import SCHEDULES
from xtask_mt.data.splits import TEST
from xtask_mt.errors import ConfigError, UserError
from xtask_mt.losses import CONSISTENCY_TARGETS, SMOOTHING_RULES
from xtask_mt.metrics import ENERGY_KEY
from xtask_mt.models import DECODER_BIASES, ENCODER_DEPTHS, TRANSFER_ARCHS
from xtask_mt.models.deeplab import OUTPUT_STRIDES
from xtask_mt.models.timm_encoder import check_timm_name, pretrained_weights_file
from xtask_mt.runtime.distributed import STRATEGIES
from xtask_mt.runtime.placement import PlacementSettings
from xtask_mt.runtime.precision import COMPILE_MODES, PRECISIONS, needs_grad_scaler
from xtask_mt.tasks import edge_name, get_task, registered_tasks

DATASET_CLASSES = {"synthetic": (7,), "cityscapes": (7, 19), "nyuv2": (13,)}
METHODS = ("none", "kd4mtl")
KEEP_POLICIES = ("auto", "all", "best_weights", "none")  # trainer.keep_checkpoints, applied by
# engine.retention (defined here, the lower layer, so that validation can name them)
TRACKING_MODES = ("online", "offline", "disabled")
WANDB_ENV_MODES = (*TRACKING_MODES, "dryrun", "run")  # W&B also reads its older names
WANDB_MAX_TAG = 64  # W&B refuses longer tags (and empty ones) at wandb.init


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class _Problems:
    """Every problem found in one config, so that one error line reports them all."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.found: list[str] = []

    def check(self, key: str, ok: Callable[[Any], bool], accepted: str) -> bool:
        """Record a problem unless `key`'s value passes `ok`; returns whether it passed."""
        value = OmegaConf.select(self.cfg, key, default=None)
        try:
            passed = value is not None and bool(ok(value))
        except (TypeError, ValueError):
            passed = False
        if not passed:
            self.found.append(f"invalid config value {key}={value!r}: expected {accepted}")
        return passed

    def catch(self, check: Callable[[], Any]) -> Any:
        """Run a check that raises ConfigError, recording its message instead."""
        try:
            return check()
        except ConfigError as exc:
            self.found.append(str(exc))
            return None

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigError("; ".join(self.found))


def _in_range(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False
              ) -> Callable[[Any], bool]:
    def ok(value: Any) -> bool:
        v = _number(value)
        if v is None or math.isnan(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    return ok


def _int_at_least(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _positive_multiple_of_32(v: Any) -> bool:
    return _int_at_least(32)(v) and v % 32 == 0


def validate_config(cfg: DictConfig) -> None:
    """Raise one ConfigError naming every value out of range (see README, Failure
    handling), before any work starts."""
    problems = _Problems(cfg)
    _check_values(problems)
    problems.raise_if_any()


def _check_values(problems: _Problems) -> None:
    cfg, check = problems.cfg, problems.check
    check("loss.alpha", _in_range(0, 1), "a number in [0, 1]")
    check("loss.gamma", _in_range(0, 1), "a number in [0, 1]")
    check("loss.label_smoothing", _in_range(0, 1, hi_open=True), "a number in [0, 1)")
    for key, choices in (("label_smoothing_rule", SMOOTHING_RULES),
                         ("consistency_target", CONSISTENCY_TARGETS)):
        if key in cfg.loss:  # configs saved before these settings lack them
            check(f"loss.{key}", lambda v, c=choices: v in c, f"one of {list(choices)}")
    tasks_ok = _check_tasks_and_edges(problems)
    _check_encoder(problems)
    check("model.arch", lambda v: v in ARCHITECTURES,
          f"one of {sorted(ARCHITECTURES)} (or pick model=mtan|adamtnet|deeplabv3plus)")
    if cfg.model.get("arch") == "deeplabv3plus":
        check("model.output_stride", lambda v: v in OUTPUT_STRIDES,
              f"one of {list(OUTPUT_STRIDES)} (the dilated trunk's output stride)")
        check("dataset.batch_size", _int_at_least(2),
              "an integer >= 2 for model=deeplabv3plus (its ASPP pools each image to one "
              "value per channel, which batch norm cannot normalise over one image)")
    check("model.transfer.arch", lambda v: v in TRANSFER_ARCHS, f"one of {sorted(TRANSFER_ARCHS)}")
    check("model.decoder_width", _int_at_least(1), "an integer >= 1")
    if "decoder_bias" in cfg.model:  # model configs without it have the method's
        check("model.decoder_bias", lambda v: v in DECODER_BIASES,
              f"one of {list(DECODER_BIASES)} (head: the decoders of runs made before it)")
    if check("dataset.name", lambda v: v in DATASET_CLASSES, f"one of {sorted(DATASET_CLASSES)}"):
        classes = DATASET_CLASSES[cfg.dataset.name]
        check("dataset.num_classes", lambda v: v in classes,
              f"{' or '.join(map(str, classes))} for dataset={cfg.dataset.name}")
        if tasks_ok:
            problems.catch(lambda: check_dataset_tasks(cfg))
    for key in ("dataset.height", "dataset.width"):
        check(key, _positive_multiple_of_32,
              "a positive integer divisible by 32 (the encoder downsamples 32x)")
    check("dataset.batch_size", _int_at_least(1), "an integer >= 1")
    check("dataset.num_workers", _int_at_least(0), "an integer >= 0")
    if "device_cache" in cfg.dataset:  # configs saved before it existed lack it
        check("dataset.device_cache", lambda v: isinstance(v, bool), "true or false")
        problems.catch(lambda: check_device_cache(cfg))
    if cfg.dataset.name == "synthetic":
        for key in ("dataset.train_size", "dataset.val_size"):
            check(key, _int_at_least(1), "an integer >= 1")
    _check_optimisation(problems)
    _check_trainer(problems)
    if cfg.get("placement") is not None:  # configs saved before placement existed lack it
        problems.catch(lambda: PlacementSettings.from_config(cfg.placement))
    if cfg.logger.get("name") == "wandb":
        check("logger.mode", lambda v: v in TRACKING_MODES, f"one of {', '.join(TRACKING_MODES)}")
        check("logger.log_checkpoints", lambda v: isinstance(v, bool), "true or false")
        check("logger.tags", lambda v: OmegaConf.is_list(v) and all(
            isinstance(x, str) and 0 < len(x) <= WANDB_MAX_TAG for x in v),
            f"a list of non-empty strings of at most {WANDB_MAX_TAG} characters (W&B's limit), "
            "e.g. 'logger.tags=[paper,cs]' (the default is the top-level tags)")
        env_mode = os.environ.get("WANDB_MODE")
        if env_mode and env_mode not in WANDB_ENV_MODES:
            problems.found.append(f"invalid environment variable WANDB_MODE={env_mode!r}: "
                                  f"expected one of {', '.join(WANDB_ENV_MODES)} (or unset it)")
    _check_method(problems)
    if tasks_ok:
        _check_weighting(problems)


def _check_encoder(problems: _Problems) -> None:
    """A ResNet depth, or a timm backbone for an architecture that reads the encoder group,
    made for the dataset's image size when it takes one size only, with its pretrained
    weights at hand (looked up without waiting on the network)."""
    cfg, check = problems.cfg, problems.check
    if encoder_library(cfg.encoder) != "timm":
        check("encoder.depth", lambda v: v in ENCODER_DEPTHS,
              f"one of {list(ENCODER_DEPTHS)} (pick encoder=resnet18|34|50|101|152, or "
              "encoder=timm encoder.name=<timm model>)")
        return
    arch = cfg.model.get("arch", "resnet_unet")
    if arch not in TAKES_TIMM:
        problems.found.append(
            f"encoder=timm but model.arch={arch} does not take a timm trunk; timm backbones "
            f"feed model.arch={'|'.join(TAKES_TIMM)} "
            "(model=xtask|mtl|stl_*): pick one of those, or drop encoder=timm")
    size = [cfg.dataset.get("height"), cfg.dataset.get("width")]
    if cfg.encoder.get("img_size") is not None:
        check("encoder.img_size", lambda v: list(v) == size,
              f"null, or [dataset.height, dataset.width] = {size} (the size a backbone of one "
              "input size is built for)")
    try:
        check_timm_name(str(cfg.encoder.name))
        if cfg.encoder.get("pretrained") or cfg.encoder.get("weights_path"):
            pretrained_weights_file(str(cfg.encoder.name), cfg.encoder.get("weights_path"))
    except UserError as exc:
        problems.found.append(str(exc))


def _check_optimisation(problems: _Problems) -> None:
    """The optimiser, the scheduler and a weighting's own learning rate."""
    cfg, check = problems.cfg, problems.check
    check("optimizer.lr", _in_range(0, math.inf, lo_open=True, hi_open=True),
          "a positive number")
    if cfg.optimizer.name == "adam":
        check("optimizer.betas", lambda v: len(v) == 2 and all(
            _in_range(0, 1, hi_open=True)(b) for b in v), "two numbers in [0, 1)")
    if cfg.optimizer.name == "sgd":
        check("optimizer.momentum", _in_range(0, 1, hi_open=True), "a number in [0, 1)")
    check("optimizer.weight_decay", _in_range(0, math.inf, hi_open=True), "a number >= 0")
    _check_scheduler(problems)
    if cfg.weighting.get("lr") is not None:
        check("weighting.lr", _in_range(0, math.inf, lo_open=True, hi_open=True),
              "a positive number or null")


def _check_scheduler(problems: _Problems) -> None:
    """The schedule's own settings, and a warm-up that leaves epochs for the schedule."""
    cfg, check = problems.cfg, problems.check
    if not check("scheduler.name", lambda v: v in SCHEDULES,
                 f"one of {', '.join(SCHEDULES)} (pick scheduler={'|'.join(SCHEDULES)})"):
        return
    name = cfg.scheduler.name
    if name == "step":
        check("scheduler.step_size", _int_at_least(1), "an integer >= 1")
        check("scheduler.gamma", _in_range(0, 1, lo_open=True), "a number in (0, 1]")
    if name == "cosine":
        check("scheduler.min_lr_ratio", _in_range(0, 1, hi_open=True),
              "a number in [0, 1) (the final lr as a fraction of optimizer.lr)")
    if name == "poly":
        check("scheduler.power", _in_range(0, math.inf, lo_open=True, hi_open=True),
              "a positive number (1: linear decay)")
    if "warmup_epochs" in cfg.scheduler:  # configs saved before warm-up existed lack it
        epochs = cfg.trainer.get("epochs")
        check("scheduler.warmup_epochs", lambda v: _int_at_least(0)(v) and (
            not _int_at_least(1)(epochs) or v < epochs),
            f"an integer >= 0 and below trainer.epochs={epochs} (the schedule needs epochs "
            "after the warm-up); lower it or raise trainer.epochs")


def _check_trainer(problems: _Problems) -> None:
    cfg, check = problems.cfg, problems.check
    check("trainer.epochs", _int_at_least(1), "an integer >= 1")
    check("trainer.val_every", _int_at_least(1), "an integer >= 1")
    check("trainer.grad_stats_every", _int_at_least(0), "an integer >= 0 (0: off)")
    if check("trainer.device", lambda v: isinstance(v, str) and (
            v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())),
            "auto, cpu, cuda or cuda:N"):
        problems.catch(lambda: _check_device(str(cfg.trainer.device)))
    check("trainer.monitor_mode", lambda v: v in ("max", "min"), "max or min")
    known = validation_metric_names(cfg)
    if known:
        check("trainer.monitor", lambda v: v in known,
              f"a validation metric of this job: {', '.join(sorted(known))}")
    check("trainer.seed", _int_at_least(0), "an integer >= 0")
    check("trainer.precision", lambda v: str(v) in PRECISIONS, f"one of {', '.join(PRECISIONS)}")
    check("trainer.channels_last", lambda v: isinstance(v, bool) or v == "auto",
          "true, false or auto")
    check("trainer.sync_every", lambda v: v == "auto" or _int_at_least(1)(v),
          "auto or an integer >= 1 (steps between the host's looks at the step results)")
    if check("trainer.compile_mode", lambda v: v in COMPILE_MODES,
             f"one of {', '.join(COMPILE_MODES)}") \
            and cfg.trainer.get("compile_mode", "default") != "default" \
            and cfg.trainer.get("compile_backend", "inductor") != "inductor":
        problems.found.append(
            f"trainer.compile_mode={cfg.trainer.compile_mode} is a mode of the inductor backend, "
            f"not of compile_backend={cfg.trainer.compile_backend}; set "
            "trainer.compile_backend=inductor or trainer.compile_mode=default")
    check("trainer.strategy", lambda v: v in STRATEGIES, f"one of {', '.join(STRATEGIES)}")
    check("trainer.keep_checkpoints", lambda v: v in KEEP_POLICIES,
          f"one of {', '.join(KEEP_POLICIES)} (what a finished job keeps of its checkpoints)")
    check("trainer.resume", lambda v: isinstance(v, str | bool) and v is not True,
          "auto, false, or the path of a checkpoint file")
    _check_debug_and_extras(problems)


def _batch_limit(v: Any) -> bool:
    """A count (int >= 1) or a fraction (float in (0, 1])."""
    if isinstance(v, float):
        return _in_range(0, 1, lo_open=True)(v)
    return _int_at_least(1)(v)


def _check_debug_and_extras(problems: _Problems) -> None:
    """Batch limits, overfitting, early stopping, the test after training, profiling,
    tags and extras."""
    cfg, check = problems.cfg, problems.check
    for key in ("trainer.limit_train_batches", "trainer.limit_val_batches"):
        check(key, _batch_limit, "a fraction of the batches in (0.0, 1.0] (a float: 1.0 is "
              "all) or a batch count >= 1 (an int)")
    check("trainer.overfit_batches", _int_at_least(0), "an integer >= 0 (0: off)")
    check("trainer.early_stopping.patience", _int_at_least(0),
          "an integer >= 0 (validations without improvement; 0: off)")
    check("trainer.early_stopping.min_delta", _in_range(0, math.inf, hi_open=True),
          "a number >= 0")
    for key in ("trainer.test_after_training", "trainer.profile", "extras.print_config"):
        check(key, lambda v: isinstance(v, bool), "true or false")
    check("tags", lambda v: OmegaConf.is_list(v) and all(isinstance(x, str) and x for x in v),
          "a list of non-empty strings, e.g. 'tags=[baseline,cityscapes]'")
    splits = dataset_splits(cfg)
    if cfg.trainer.get("test_after_training") is True and TEST not in splits:
        problems.found.append(
            f"trainer.test_after_training=true but dataset={cfg.dataset.name} has only the "
            f"{', '.join(splits)} splits (Cityscapes and NYUv2 ship no labelled test split); "
            "set trainer.test_after_training=false, or evaluate the val split with evaluate.py")
    elif cfg.trainer.get("test_after_training") is True and cfg.dataset.name == "synthetic":
        check("dataset.test_size", _int_at_least(1),
              "an integer >= 1 (trainer.test_after_training=true tests on it after training)")


def _check_method(problems: _Problems) -> None:
    """method=none|kd4mtl and, for kd4mtl, its settings (the teachers are checked when
    they are loaded)."""
    cfg, check = problems.cfg, problems.check
    if cfg.get("method") is None:  # configs saved before methods existed
        return
    if not check("method.name", lambda v: v in METHODS, f"one of {', '.join(METHODS)}") \
            or cfg.method.name != "kd4mtl":
        return
    check("kd.teachers", lambda v: len(v) > 0 and all(isinstance(e, str) for e in v),
          "a non-empty list of single-task run dirs or checkpoint files, e.g. "
          "'kd.teachers=[runs/stl_seg,runs/stl_depth]'")
    check("kd.levels", lambda v: len(v) > 0 and all(_int_at_least(-99)(x) for x in v),
          "a non-empty list of trunk feature indices, e.g. [-1]")
    check("kd.weight", _in_range(0, math.inf, hi_open=True), "a number >= 0")
    check("kd.adaptor_lr", _in_range(0, math.inf, lo_open=True, hi_open=True),
          "a positive number")
    check("kd.adaptor_weight_decay", _in_range(0, math.inf, hi_open=True), "a number >= 0")
    if cfg.trainer.get("compile", False):
        problems.found.append("trainer.compile=true cannot be combined with method=kd4mtl (it "
                              "reads the trunk's features inside the compiled graph); set "
                              "trainer.compile=false")


def _check_device(device: str) -> None:
    if device.startswith("cuda"):
        count = torch.cuda.device_count()
        index = int(device[5:]) if device.startswith("cuda:") else 0
        if index >= count:
            raise ConfigError(f"trainer.device={device}, but this machine has "
                              f"{count or 'no'} CUDA device{'s' if count != 1 else ''} visible "
                              "to PyTorch; use trainer.device=cpu or auto")


def _check_weighting(problems: _Problems) -> None:
    """The weighting's own checks (its constructor), and what it cannot run with."""
    cfg = problems.cfg
    weighting = problems.catch(lambda: build_weighting(cfg, tuple(cfg.model.tasks)))
    if weighting is None:
        return
    precision = str(cfg.trainer.precision)
    if precision in PRECISIONS and needs_grad_scaler(precision) \
            and not weighting.supports_grad_scaler:
        problems.found.append(
            f"trainer.precision={precision} cannot be combined with weighting="
            f"{cfg.weighting.get('name')} (it cannot run with a loss scaler); use bf16-mixed "
            "or 32")
    if cfg.trainer.get("compile", False) and not weighting.supports_compile:
        problems.found.append(
            f"trainer.compile=true cannot be combined with weighting="
            f"{cfg.weighting.get('name')} (it reads tensors inside the compiled graph); set "
            "trainer.compile=false")


def validation_metric_names(cfg: DictConfig) -> set[str]:
    """The `val/*` names a validation of this job reports: each task's metrics, the
    consistency metric of each edge into it, the loss term of each task and edge, and the
    consistency energy of each edge and over the edges (empty when the tasks or edges are
    themselves invalid)."""
    try:
        tasks = [get_task(t) for t in cfg.model.tasks]
        edges = transfer_edges(cfg) if bool(cfg.model.transfer.enabled) else []
    except (KeyError, ValueError, ConfigError, TypeError):
        return set()
    names = {name for task in tasks for name in task.metric_directions if name != "consistency"}
    names |= {f"consistency_{edge_name(s, t)}" for s, t in edges}
    names |= {f"loss_{task.name}" for task in tasks}
    names |= {f"loss_{edge_name(s, t)}" for s, t in edges}
    if edges:
        names |= {ENERGY_KEY, *(f"energy_{edge_name(s, t)}" for s, t in edges)}
    return {f"val/{n}" for n in names}


def _check_tasks_and_edges(problems: _Problems) -> bool:
    """Registered tasks, edges between two different configured tasks, and for each edge a
    consistency weight in [0, 1], those of one source task summing to at most 1. Returns
    whether the tasks and edges are usable for the checks that build on them."""
    cfg, check = problems.cfg, problems.check
    known = registered_tasks()
    if not check("model.tasks", lambda v: len(v) > 0 and len(set(v)) == len(v) and all(
            t in known for t in v), f"a non-empty list of distinct tasks among {list(known)}"):
        return False
    tasks = list(cfg.model.tasks)
    if not bool(cfg.model.transfer.enabled):
        return True
    if not check("model.transfer.edges", lambda v: all(
            len(e) == 2 and e[0] in tasks and e[1] in tasks and e[0] != e[1] for e in v) and len(
            {tuple(e) for e in v}) == len(v),
            f"distinct [source, target] pairs of two different tasks of model.tasks {tasks}"):
        return False
    totals: dict[str, float] = {}
    for source, target in transfer_edges(cfg):
        name = edge_name(source, target)
        key = f"loss.consistency.{name}"
        value = OmegaConf.select(cfg, key, default=None)
        if _in_range(0, 1)(value):
            totals[source] = totals.get(source, 0.0) + float(value)
        elif name not in cfg.loss.consistency or not OmegaConf.is_interpolation(
                cfg.loss.consistency, name):  # an interpolation's own key is reported
            check(key, _in_range(0, 1), "a number in [0, 1] (the edge's consistency weight)")
    for source, total in totals.items():
        if total > 1:
            problems.found.append(
                f"the consistency weights of the edges out of {source} sum to {total:g} "
                f"(loss.consistency.{source}_to_*); they weigh against its direct loss, so "
                "their sum must be at most 1")
    return True
