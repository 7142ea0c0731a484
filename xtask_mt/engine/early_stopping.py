"""Early stopping on trainer.monitor (`trainer.early_stopping`), counted in validations.

The count of validations without improvement lives in the run's Progress, so a resumed job
carries on counting; whether to stop is decided from that count and the current config, so a
job resumed with a larger patience trains on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig


def beats(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether `value` of the monitor is better than `best` by more than `min_delta` in
    direction `mode` (max | min); NaN never beats, and anything else beats no best yet. The
    best checkpoint (min_delta 0) and early stopping both judge by it."""
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    gain = value - best if mode == "max" else best - value
    return gain > min_delta


@dataclass(frozen=True)
class EarlyStopping:
    """Stop after `patience` validations in a row that did not beat the best value of the
    monitor by more than `min_delta` (patience 0: never stop early)."""

    patience: int = 0
    min_delta: float = 0.0
    mode: str = "max"

    @classmethod
    def from_config(cls, trainer: DictConfig) -> EarlyStopping:
        """trainer.early_stopping (absent in configs saved before it existed: off)."""
        settings = trainer.get("early_stopping") or {}
        return cls(int(settings.get("patience", 0)), float(settings.get("min_delta", 0.0)),
                   str(trainer.monitor_mode))

    def improved(self, value: float, best: float | None) -> bool:
        """Whether `value` beats `best` (the best before this validation) by > min_delta."""
        return beats(value, best, self.mode, self.min_delta)

    def stale_count(self, stale: int, value: float, best: float | None) -> int:
        """The count of validations without improvement after one that gave `value`."""
        return 0 if self.improved(value, best) else stale + 1

    def should_stop(self, stale: int) -> bool:
        return self.patience > 0 and stale >= self.patience

    def reason(self, monitor: str, stale: int) -> str:
        """Why training stopped, for the log."""
        return (f"{monitor} has not improved by more than {self.min_delta:g} for {stale} "
                f"validations (trainer.early_stopping.patience={self.patience})")
