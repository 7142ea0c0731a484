"""Check every config value before any work starts, naming the key, value and accepted range."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xtask_mt.config.build import build_weighting, check_dataset_tasks, transfer_edges
from xtask_mt.errors import ConfigError
from xtask_mt.models.encoder import ENCODER_DEPTHS
from xtask_mt.runtime.distributed import STRATEGIES
from xtask_mt.runtime.precision import PRECISIONS, needs_grad_scaler
from xtask_mt.tasks import edge_name, registered_tasks

DATASET_CLASSES = {"synthetic": (7,), "cityscapes": (7, 19), "nyuv2": (13,)}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _check(cfg: DictConfig, key: str, ok: Callable[[Any], bool], accepted: str) -> None:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None or not ok(value):
        raise ConfigError(f"invalid config value {key}={value!r}: expected {accepted}")


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
    """Raise ConfigError for the first value out of range (see README, Failure handling)."""
    _check(cfg, "loss.alpha", _in_range(0, 1), "a number in [0, 1]")
    _check(cfg, "loss.gamma", _in_range(0, 1), "a number in [0, 1]")
    _check(cfg, "loss.label_smoothing", _in_range(0, 1, hi_open=True), "a number in [0, 1)")
    _check_tasks_and_edges(cfg)
    _check(cfg, "encoder.depth", lambda v: v in ENCODER_DEPTHS,
           f"one of {list(ENCODER_DEPTHS)} (pick encoder=resnet18|34|50|101|152)")
    _check(cfg, "dataset.name", lambda v: v in DATASET_CLASSES,
           f"one of {sorted(DATASET_CLASSES)}")
    classes = DATASET_CLASSES[cfg.dataset.name]
    _check(cfg, "dataset.num_classes", lambda v: v in classes,
           f"{' or '.join(map(str, classes))} for dataset={cfg.dataset.name}")
    for key in ("dataset.height", "dataset.width"):
        _check(cfg, key, _positive_multiple_of_32,
               "a positive integer divisible by 32 (the encoder downsamples 32x)")
    check_dataset_tasks(cfg)
    _check(cfg, "dataset.batch_size", _int_at_least(1), "an integer >= 1")
    _check(cfg, "dataset.num_workers", _int_at_least(0), "an integer >= 0")
    if cfg.dataset.name == "synthetic":
        for key in ("dataset.train_size", "dataset.val_size"):
            _check(cfg, key, _int_at_least(1), "an integer >= 1")
    _check(cfg, "optimizer.lr", _in_range(0, math.inf, lo_open=True, hi_open=True),
           "a positive number")
    if cfg.optimizer.name == "adam":
        _check(cfg, "optimizer.betas", lambda v: len(v) == 2 and all(
            _in_range(0, 1, hi_open=True)(b) for b in v), "two numbers in [0, 1)")
    _check(cfg, "optimizer.weight_decay", _in_range(0, math.inf, hi_open=True),
           "a number >= 0")
    _check(cfg, "scheduler.step_size", _int_at_least(1), "an integer >= 1")
    _check(cfg, "scheduler.gamma", _in_range(0, 1, lo_open=True), "a number in (0, 1]")
    if cfg.weighting.get("lr") is not None:
        _check(cfg, "weighting.lr", _in_range(0, math.inf, lo_open=True, hi_open=True),
               "a positive number or null")
    _check(cfg, "trainer.epochs", _int_at_least(1), "an integer >= 1")
    _check(cfg, "trainer.val_every", _int_at_least(1), "an integer >= 1")
    _check(cfg, "trainer.grad_stats_every", _int_at_least(0), "an integer >= 0 (0: off)")
    _check(cfg, "trainer.device", lambda v: isinstance(v, str) and (
        v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())),
           "auto, cpu, cuda or cuda:N")
    _check(cfg, "trainer.monitor_mode", lambda v: v in ("max", "min"), "max or min")
    _check(cfg, "trainer.seed", _int_at_least(0), "an integer >= 0")
    _check(cfg, "trainer.precision", lambda v: str(v) in PRECISIONS,
           f"one of {', '.join(PRECISIONS)}")
    _check(cfg, "trainer.strategy", lambda v: v in STRATEGIES, f"one of {', '.join(STRATEGIES)}")
    weighting = build_weighting(cfg, tuple(cfg.model.tasks))  # its own checks, and this one:
    if needs_grad_scaler(str(cfg.trainer.precision)) and not weighting.supports_grad_scaler:
        raise ConfigError(f"trainer.precision={cfg.trainer.precision} cannot be combined with "
                          f"weighting={cfg.weighting.get('name')} (it cannot run with a loss "
                          "scaler); use bf16-mixed or 32")
    if cfg.trainer.get("compile", False) and not weighting.supports_compile:
        raise ConfigError(f"trainer.compile=true cannot be combined with "
                          f"weighting={cfg.weighting.get('name')} (it reads tensors inside "
                          "the compiled graph); set trainer.compile=false")
    _check(cfg, "trainer.resume", lambda v: isinstance(v, str | bool) and v is not True,
           "auto, false, or the path of a checkpoint file")


def _check_tasks_and_edges(cfg: DictConfig) -> None:
    """Registered tasks, edges between two different configured tasks, and for each edge a
    consistency weight in [0, 1], those of one source task summing to at most 1."""
    known = registered_tasks()
    _check(cfg, "model.tasks", lambda v: len(v) > 0 and len(set(v)) == len(v) and all(
        t in known for t in v), f"a non-empty list of distinct tasks among {list(known)}")
    tasks = list(cfg.model.tasks)
    if not bool(cfg.model.transfer.enabled):
        return
    _check(cfg, "model.transfer.edges", lambda v: all(
        len(e) == 2 and e[0] in tasks and e[1] in tasks and e[0] != e[1] for e in v) and len(
        {tuple(e) for e in v}) == len(v),
        f"distinct [source, target] pairs of two different tasks of model.tasks {tasks}")
    totals: dict[str, float] = {}
    for source, target in transfer_edges(cfg):
        key = f"loss.consistency.{edge_name(source, target)}"
        _check(cfg, key, _in_range(0, 1), "a number in [0, 1] (the edge's consistency weight)")
        totals[source] = totals.get(source, 0.0) + float(OmegaConf.select(cfg, key))
    for source, total in totals.items():
        if total > 1:
            raise ConfigError(f"the consistency weights of the edges out of {source} sum to "
                              f"{total:g} (loss.consistency.{source}_to_*); they weigh against "
                              "its direct loss, so their sum must be at most 1")
