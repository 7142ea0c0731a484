"""Experiment trackers (where per-epoch figures go besides the console and metrics.json) and
the validation previews they show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xtask_mt.tracking.base import Tracker
from xtask_mt.tracking.previews import SamplePreview, TaskPreview, validation_previews


def build_tracker(cfg: Any, output_dir: Any, resume_id: str | None = None) -> Tracker:
    """Tracker for `cfg.logger`."""
    name = cfg.logger.name
    if name == "none":
        return Tracker()
    if name == "wandb":  # imported here: wandb is slow to import and unused otherwise
        from xtask_mt.tracking.wandb_run import start_wandb_run

        return start_wandb_run(cfg, Path(output_dir), resume_id)
    raise ValueError(f"unknown logger {name!r}")


__all__ = ["SamplePreview", "TaskPreview", "Tracker", "build_tracker", "validation_previews"]
