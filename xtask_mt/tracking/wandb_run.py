"""Weights & Biases tracker: one run per Hydra job, grouped by sweep, never fatal to training.

Every W&B call is guarded: if W&B cannot start, a single warning is logged and training goes
on without it; if one kind of call fails later (scalars, media, summary, artifacts), one
warning switches off that kind only. The W&B step is the epoch, passed explicitly, so a resumed run
carries on from the epoch it stopped at instead of restarting its step count.

Run summary: plain `val/<metric>` keys hold the last validation (W&B's default), `best/<key>`
every validation metric of the best epoch by trainer.monitor (what metrics.json calls
"best") plus `best/epoch`, and `max/val/<metric>` or `min/val/<metric>` (by the metric's
direction) the best value each metric reached over the run, whichever epoch it came from.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from xtask_mt.metrics.segmentation import none_for_nan
from xtask_mt.tasks import higher_is_better
from xtask_mt.tracking.base import Tracker
from xtask_mt.tracking.job_context import MAX_TAG, JobContext, job_context
from xtask_mt.tracking.previews import SamplePreview, TaskPreview
from xtask_mt.viz.colours import colour_bar

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}  # older WANDB_MODE values
ACCEPTED_MODES = (*MODES, *_MODE_ALIASES)  # what resolve_mode takes
_UNREACHABLE = ".wandb_unreachable"  # in a sweep dir: a job of the sweep could not reach W&B
RUN_RECORD = "tracked_run.json"  # in <job dir>/wandb/: the run's id, name, group, project
CLASS_IOU_KEY = "val/per_class_iou"


def _unreachable_marker() -> Path | None:
    """The file that tells a sweep's later jobs that W&B could not be reached online (so
    they log offline at once instead of each waiting init_timeout); None outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir) / _UNREACHABLE


def iou_table(class_names: Sequence[str], iou: Sequence[float | None],
              epoch: int | None = None) -> Any:
    """A wandb.Table of per-class IoU (None where a class was never seen nor predicted),
    with an epoch column when given so tables of several epochs can be stacked."""
    import wandb

    names = [class_names[c] if c < len(class_names) else f"class {c}" for c in range(len(iou))]
    values = none_for_nan(iou)
    if epoch is None:
        return wandb.Table(columns=["class", "iou"], data=[list(r) for r in zip(names, values,
                                                                                strict=True)])
    return wandb.Table(columns=["epoch", "class", "iou"],
                       data=[[epoch, n, v] for n, v in zip(names, values, strict=True)])


def _map_image(wandb: Any, task: str, preview: TaskPreview, unit: str) -> Any:
    """The layers side by side, then a colour bar strip; the caption gives its range."""
    first = next(iter(preview.layers.values()))
    height = first.shape[0]
    strip = colour_bar(height, max(4, height // 8))
    gap = np.full((height, 2, 3), 255, np.uint8)
    lo, hi = preview.scale or (0.0, 1.0)
    caption = (" | ".join(preview.layers) + f" | colour bar: {task} {lo:.3g} (top, bright) to "
               f"{hi:.3g} (bottom, dark)" + (f" [{unit}]" if unit else ""))
    return wandb.Image(np.concatenate([*preview.layers.values(), gap, strip], axis=1),
                       caption=caption)


class WandbTracker(Tracker):
    """Logs per-epoch scalars with the epoch as the W&B step, the summaries described at the
    top of this module, validation samples and per-class IoU tables, and, when asked, the
    checkpoints as a model artifact at the end."""

    def __init__(self, run: Any, samples: int, checkpoint_dir: Path | None = None) -> None:
        self.run = run
        self.run_id = run.id
        self.sample_count = samples
        self._checkpoint_dir = checkpoint_dir  # None: no checkpoint artifact
        self._best_epoch = 0
        self._failed: set[str] = set()  # features switched off after a failure
        self._guard("scalars", "define_metric", self._define_step)

    def _define_step(self) -> None:
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")

    def _guard(self, feature: str, what: str, fn: Callable[..., Any], *args: Any,
               **kwargs: Any) -> None:
        """Call `fn`; on failure warn once and switch off `feature` (scalars, media, summary,
        artifacts) alone, so that e.g. an image W&B cannot take does not stop the scalars."""
        if feature in self._failed:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # W&B must never stop training
            self._failed.add(feature)
            log.warning("W&B %s failed (%s: %s); training goes on without W&B %s",
                        what, type(exc).__name__, exc, feature)

    def log(self, values: dict[str, float], step: int) -> None:
        self._guard("scalars", "log", self.run.log, {"epoch": step, **values}, step=step)

    def summarise(self, history: Sequence[dict[str, Any]], best: dict[str, float],
                  best_epoch: int) -> None:
        self._best_epoch = best_epoch
        self._guard("summary", "summary", lambda: self.run.summary.update(
            summary_values(history, best, best_epoch)))

    def log_class_iou(self, class_names: Sequence[str], iou: Sequence[float], step: int
                      ) -> None:
        self._guard("media", "table logging", lambda: self.run.log(
            {CLASS_IOU_KEY: iou_table(class_names, iou, step)}, step=step))

    def log_samples(self, samples: dict[str, Any], step: int) -> None:
        self._guard("media", "image logging", self._log_samples, samples, step)

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
                key = f"samples/{task}_{i}"
                if preview.kind == "labels":
                    masks = {name: {"mask_data": m, "class_labels": labels}
                             for name, m in preview.layers.items()}
                    images[key] = wandb.Image(
                        p.image, masks=masks, caption="masks: " + ", ".join(preview.layers))
                elif preview.kind == "map":
                    images[key] = _map_image(wandb, task, preview, str(samples.get("unit", "")))
                else:
                    images[key] = wandb.Image(
                        np.concatenate(list(preview.layers.values()), axis=1),
                        caption=" | ".join(preview.layers) + " (RGB = (n + 1) / 2)")
        self.run.log(images, step=step)

    def _log_checkpoints(self) -> None:
        import wandb

        files = [self._checkpoint_dir / n for n in ("best.pt", "last.pt")
                 if (self._checkpoint_dir / n).is_file()]
        if not files:
            log.warning("logger.log_checkpoints: no best.pt or last.pt in %s to log",
                        self._checkpoint_dir)
            return
        artifact = wandb.Artifact(f"model-{self.run.id}", type="model",
                                  metadata={"best_epoch": self._best_epoch})
        for path in files:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=["latest", f"best-epoch-{self._best_epoch}"])

    def finish(self, exit_code: int = 0) -> None:
        if exit_code == 0 and self._checkpoint_dir is not None:
            self._guard("artifacts", "checkpoint artifact", self._log_checkpoints)
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as exc:
            log.warning("W&B finish failed (%s: %s); run files are in %s",
                        type(exc).__name__, exc, getattr(self.run, "dir", "?"))


def summary_values(history: Sequence[dict[str, Any]], best: dict[str, float],
                   best_epoch: int) -> dict[str, float]:
    """`best/<key>` and `best/epoch` from the best epoch, and `max/<key>` or `min/<key>`
    of every validation metric over the validated epochs in `history`."""
    values: dict[str, float] = {f"best/{k}": v for k, v in best.items()}
    if best:
        values["best/epoch"] = best_epoch
    for key in dict.fromkeys(k for row in history for k in row if k.startswith("val/")):
        seen = [float(row[key]) for row in history
                if isinstance(row.get(key), (int, float)) and not math.isnan(row[key])]
        if seen:
            high = higher_is_better(key)
            values[f"{'max' if high else 'min'}/{key}"] = max(seen) if high else min(seen)
    return values


def resolve_mode(configured: str) -> str:
    """The W&B mode to use: WANDB_MODE when set (it wins, as in W&B), else `configured`."""
    mode = os.environ.get("WANDB_MODE") or str(configured)
    mode = _MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"W&B mode {mode!r} (logger.mode or WANDB_MODE) is not one of "
                         f"{', '.join(MODES)}; pick one, e.g. logger.mode=offline")
    return mode


def _usable_mode(mode: str) -> str:
    """`mode`, or offline when online was asked for but no credentials are configured."""
    import wandb

    if mode == "online" and not wandb.login(prompt=False, verify=False):
        log.warning("no W&B credentials (run `wandb login` or set WANDB_API_KEY): logging "
                    "offline instead; upload later with `wandb sync <job dir>/wandb/offline-*`")
        return "offline"
    return mode


def open_run(mode: str, init: Callable[[str], Any], marker: Path | None = None
             ) -> tuple[Any, str]:
    """(run, mode used) from `init(mode)`: online without credentials, after a sweep's
    earlier job found W&B unreachable (`marker`), or when online init fails, offline."""
    mode = _usable_mode(mode)
    if mode == "online" and marker is not None and marker.exists():
        log.warning("an earlier job of this sweep could not reach W&B (%s): logging "
                    "offline at once; upload later with `wandb sync`", marker)
        mode = "offline"
    try:
        return init(mode), mode
    except Exception as exc:
        if mode != "online":
            raise
        log.warning("W&B could not start online (%s: %s); logging offline instead, upload "
                    "later with `wandb sync`", type(exc).__name__, exc)
        if marker is not None:
            with contextlib.suppress(OSError):  # the warning above still stands
                marker.touch()
        return init("offline"), "offline"


def wandb_settings(lg: DictConfig) -> Any:
    import wandb

    return wandb.Settings(init_timeout=float(lg.get("init_timeout", 60)),
                          finish_timeout=float(lg.get("finish_timeout", 300)))


def _user_tags(tags: Any) -> list[str]:
    """logger.tags as W&B takes them (validate_config refuses others; this keeps a library
    caller's bad tag from failing wandb.init): one string is one tag, empty ones are left out
    and long ones cut to W&B's limit."""
    if isinstance(tags, str):
        tags = [tags]
    return [str(t)[:MAX_TAG] for t in tags or [] if str(t)]


def _record_run(output_dir: Path, record: dict[str, Any]) -> None:
    """Write <job dir>/wandb/tracked_run.json, which evaluate.py reads to link its run."""
    path = output_dir / "wandb" / RUN_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{RUN_RECORD}.tmp")
    temp.write_text(json.dumps(record, indent=1))
    temp.replace(path)


def read_run_record(job_dir: Path) -> dict[str, Any]:
    """What `_record_run` wrote for the training job in `job_dir`; {} when there is none."""
    path = Path(job_dir) / "wandb" / RUN_RECORD
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def start_wandb_run(cfg: DictConfig, output_dir: Path, resume_id: str | None = None) -> Tracker:
    """A W&B run for this job, or the no-op Tracker (with one warning) if W&B cannot start.

    `resume_id` (a checkpoint's `wandb_run_id`) continues that run instead of a new one.
    """
    lg = cfg.logger
    mode = resolve_mode(str(lg.mode))
    if mode == "disabled":
        return Tracker()
    try:
        context = job_context()
    except Exception as exc:  # a name is not worth losing the run for
        log.warning("W&B run name and group could not be read from the Hydra job (%s: %s)",
                    type(exc).__name__, exc)
        context = JobContext()
    name = lg.get("run_name") or context.name or Path(output_dir).name
    group = lg.get("group") or context.group
    tags = list(dict.fromkeys([*_user_tags(lg.get("tags")), *context.tags]))

    def init(mode: str) -> Any:
        import wandb

        config = OmegaConf.to_container(cfg, resolve=True)
        config["logger"]["mode"] = mode  # the mode used, after WANDB_MODE and fallbacks
        if context.overrides:
            config["overrides"] = list(context.overrides)
        return wandb.init(
            project=lg.project, entity=lg.get("entity"), group=group,
            job_type=lg.get("job_type"), tags=tags, name=name, config=config,
            dir=str(output_dir), mode=mode, id=resume_id, resume="allow",
            reinit="finish_previous", settings=wandb_settings(lg))

    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        run, mode = open_run(mode, init, _unreachable_marker())
    except Exception as exc:  # W&B must never stop training
        log.warning("W&B could not start (%s: %s); training goes on without W&B logging",
                    type(exc).__name__, exc)
        return Tracker()
    log.info("W&B run %s (%s, %s) in %s", run.id, name, mode, run.dir or output_dir)
    try:
        _record_run(output_dir, {"id": run.id, "name": name, "group": group, "tags": tags,
                                 "project": lg.project, "entity": lg.get("entity"),
                                 "mode": mode})
        if (output_dir / ".hydra").is_dir():  # the job's config, as Hydra wrote it
            run.save(str(output_dir / ".hydra" / "*.yaml"), base_path=str(output_dir),
                     policy="now")
    except Exception as exc:
        log.warning("W&B could not keep the job's .hydra files (%s: %s)",
                    type(exc).__name__, exc)
    checkpoints = output_dir / "checkpoints" if lg.get("log_checkpoints", False) else None
    return WandbTracker(run, int(lg.get("samples", 0)), checkpoints)
