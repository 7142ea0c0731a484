"""The tracker interface, and the tracker that records nothing."""

from __future__ import annotations

from typing import Any


class Tracker:
    """A tracker that records nothing (`logger=none`); others override these methods."""

    run_id: str | None = None
    sample_count: int = 0  # validation samples wanted by log_samples each validation

    def log(self, values: dict[str, float], step: int) -> None:
        """Record scalar `values` at `step` (the epoch)."""

    def log_samples(self, samples: dict[str, Any], step: int) -> None:
        """Record a few visual validation samples: `samples["previews"]` (a list of
        previews.SamplePreview) and `samples["class_names"]`."""

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; a non-zero exit code marks it failed."""
