"""Experiment trackers: where per-epoch figures go besides the console and metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Tracker:
    """A tracker that records nothing (`logger=none`); others override these methods."""

    run_id: str | None = None
    sample_count: int = 0  # validation samples wanted by log_samples each validation

    def log(self, values: dict[str, float], step: int) -> None:
        """Record scalar `values` at `step` (the epoch)."""

    def log_samples(self, samples: dict[str, Any], step: int) -> None:
        """Record a few visual validation samples: `samples["previews"]` (a list of
        visuals.SamplePreview) and `samples["class_names"]`."""

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; a non-zero exit code marks it failed."""


def build_tracker(cfg: Any, output_dir: Any, resume_id: str | None = None) -> Tracker:
    """Tracker for `cfg.logger`."""
    name = cfg.logger.name
    if name == "none":
        return Tracker()
    if name == "wandb":  # imported here: wandb is slow to import and unused otherwise
        from xtask_mt.wandb_tracker import start_wandb_run

        return start_wandb_run(cfg, Path(output_dir), resume_id)
    raise ValueError(f"unknown logger {name!r}")
