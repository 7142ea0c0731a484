"""The tracker interface, and the tracker that records nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Tracker:
    """A tracker that records nothing (`logger=none`); others override these methods.

    Every `step` is the epoch (0 before training), so a resumed run continues its steps.
    """

    run_id: str | None = None
    sample_count: int = 0  # validation samples wanted by log_samples each validation

    def log(self, values: dict[str, float], step: int) -> None:
        """Record scalar `values` at `step` (the epoch)."""

    def log_samples(self, samples: dict[str, Any], step: int) -> None:
        """Record a few visual validation samples: `samples["previews"]` (a list of
        previews.SamplePreview), `samples["class_names"]` and `samples["unit"]` (of value
        maps such as depth)."""

    def log_class_iou(self, class_names: Sequence[str], iou: Sequence[float], step: int
                      ) -> None:
        """Record one validation's per-class IoU (NaN: class never seen nor predicted)."""

    def summarise(self, history: Sequence[dict[str, Any]], best: dict[str, float],
                  best_epoch: int) -> None:
        """After each validation: `history` holds every validated epoch's figures so far
        (this one last), `best` the figures of epoch `best_epoch`, best by
        trainer.monitor. Passed whole so a resumed job's summary covers the whole run."""

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; a non-zero exit code marks it failed."""
