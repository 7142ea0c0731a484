"""Weights & Biases tracker: one run per Hydra job, grouped by sweep, never fatal to training.

Every W&B call is guarded: if W&B cannot start or fails later, a single warning is logged and
training goes on without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from xtask_mt.tasks import higher_is_better
from xtask_mt.tracking.base import Tracker
from xtask_mt.tracking.previews import SamplePreview

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}  # older WANDB_MODE values
_MAX_GROUP = 128  # W&B's limit on group names
_UNREACHABLE = ".wandb_unreachable"  # in a sweep dir: a job of the sweep could not reach W&B


def hydra_job_context() -> dict[str, Any]:
    """Run name and default group from Hydra when a Hydra job is running, else {}."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    context: dict[str, Any] = {"name": hc.job.override_dirname or None}
    if hc.mode == RunMode.MULTIRUN:
        context["group"] = _group_from_path(Path(hc.sweep.dir))
    else:
        context["group"] = hc.runtime.choices.get("experiment")
    return context


def _unreachable_marker() -> Path | None:
    """The file that tells a sweep's later jobs that W&B could not be reached online (so
    they log offline at once instead of each waiting init_timeout); None outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir) / _UNREACHABLE


def _group_from_path(sweep_dir: Path) -> str:
    """The sweep dir relative to the working directory when inside it, else as given."""
    try:
        text = str(sweep_dir.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        text = str(sweep_dir)
    return text[-_MAX_GROUP:]


class WandbTracker(Tracker):
    """Logs per-epoch scalars against `epoch`, best-value summaries, and validation samples."""

    def __init__(self, run: Any, monitor: str, monitor_mode: str, samples: int) -> None:
        self.run = run
        self.run_id = run.id
        self.sample_count = samples
        self._monitor, self._mode = monitor, monitor_mode
        self._best: float | None = None
        self._defined: set[str] = set()
        self._failed = False
        self._guard("define_metric", self._define_step)

    def _define_step(self) -> None:
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        if self._failed:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # W&B must never stop training
            self._failed = True
            log.warning("W&B %s failed (%s: %s); training goes on without W&B logging",
                        what, type(exc).__name__, exc)

    def _define(self, keys: list[str]) -> None:
        for key in keys:
            if key in self._defined or key == "epoch":
                continue
            self._defined.add(key)
            if key.startswith("val/"):
                summary = "max" if higher_is_better(key) else "min"
                self.run.define_metric(key, step_metric="epoch", summary=summary)

    def log(self, values: dict[str, float], step: int) -> None:
        self._guard("define_metric", self._define, list(values))
        self._guard("log", self.run.log, {"epoch": step, **values})
        value = values.get(self._monitor)
        if value is None or value != value:  # absent or NaN
            return
        better = self._best is None or (value > self._best if self._mode == "max"
                                        else value < self._best)
        if better:
            self._best = value
            self._guard("summary", self.run.summary.update,
                        {f"best/{self._monitor}": value, "best/epoch": step})

    def log_samples(self, samples: dict[str, Any], step: int) -> None:
        self._guard("image logging", self._log_samples, samples, step)

    def _log_samples(self, samples: dict[str, Any], step: int) -> None:
        import wandb

        previews: list[SamplePreview] = samples["previews"]
        class_names = list(samples.get("class_names") or [])
        images: dict[str, Any] = {"epoch": step}
        for i, p in enumerate(previews):
            labels = {c: (class_names[c] if c < len(class_names) else f"class {c}")
                      for c in range(p.void_id)}
            labels[p.void_id] = "ignore"
            for task, preview in p.tasks.items():
                if preview.kind == "labels":
                    masks = {name: {"mask_data": m, "class_labels": labels}
                             for name, m in preview.layers.items()}
                    images[f"samples/{task}_{i}"] = wandb.Image(
                        p.image, masks=masks, caption="masks: " + ", ".join(preview.layers))
                else:
                    images[f"samples/{task}_{i}"] = wandb.Image(
                        np.concatenate(list(preview.layers.values()), axis=1),
                        caption=" | ".join(preview.layers) + (
                            " (low = bright)" if preview.kind == "map" else " (RGB = (n + 1) / 2)"))
        self.run.log(images)

    def finish(self, exit_code: int = 0) -> None:
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as exc:
            log.warning("W&B finish failed (%s: %s); run files are in %s",
                        type(exc).__name__, exc, getattr(self.run, "dir", "?"))


def _usable_mode(mode: str) -> str:
    """`mode`, or offline when online was asked for but no credentials are configured."""
    import wandb

    if mode == "online" and not wandb.login(prompt=False, verify=False):
        log.warning("no W&B credentials (run `wandb login` or set WANDB_API_KEY): logging "
                    "offline instead; upload later with `wandb sync <job dir>/wandb/offline-*`")
        return "offline"
    return mode


def start_wandb_run(cfg: DictConfig, output_dir: Path, resume_id: str | None = None) -> Tracker:
    """A W&B run for this job, or the no-op Tracker (with one warning) if W&B cannot start.

    `resume_id` (a checkpoint's `wandb_run_id`) continues that run instead of a new one.
    """
    lg = cfg.logger
    mode = os.environ.get("WANDB_MODE") or str(lg.mode)  # the environment wins, as in W&B
    mode = _MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"W&B mode {mode!r} (logger.mode or WANDB_MODE) is not one of "
                         f"{', '.join(MODES)}; pick one, e.g. logger.mode=offline")
    if mode == "disabled":
        return Tracker()
    context = hydra_job_context()
    name = lg.get("run_name") or context.get("name") or Path(output_dir).name
    group = lg.get("group") or context.get("group")
    def init(mode: str) -> Any:
        import wandb

        return wandb.init(
            project=lg.project, entity=lg.get("entity"), group=group,
            job_type=lg.get("job_type"), tags=list(lg.get("tags") or []), name=name,
            config=OmegaConf.to_container(cfg, resolve=True), dir=str(output_dir), mode=mode,
            id=resume_id, resume="allow", reinit="finish_previous",
            settings=wandb.Settings(init_timeout=float(lg.get("init_timeout", 60)),
                                    finish_timeout=float(lg.get("finish_timeout", 0))),
        )

    marker = _unreachable_marker()
    try:
        mode = _usable_mode(mode)
        if mode == "online" and marker is not None and marker.exists():
            log.warning("an earlier job of this sweep could not reach W&B (%s): logging "
                        "offline at once; upload later with `wandb sync`", marker)
            mode = "offline"
        output_dir.mkdir(parents=True, exist_ok=True)
        try:
            run = init(mode)
        except Exception as exc:
            if mode != "online":
                raise
            log.warning("W&B could not start online (%s: %s); logging offline instead, upload "
                        "later with `wandb sync`", type(exc).__name__, exc)
            if marker is not None:
                with contextlib.suppress(OSError):  # the warning above still stands
                    marker.touch()
            mode = "offline"
            run = init(mode)
    except Exception as exc:  # W&B must never stop training
        log.warning("W&B could not start (%s: %s); training goes on without W&B logging",
                    type(exc).__name__, exc)
        return Tracker()
    log.info("W&B run %s (%s, %s) in %s", run.id, name, mode, run.dir or output_dir)
    return WandbTracker(run, str(cfg.trainer.monitor), str(cfg.trainer.monitor_mode),
                        int(lg.get("samples", 0)))
