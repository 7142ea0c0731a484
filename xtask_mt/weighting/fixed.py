"""Fixed task weights (plain weighted sum)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from xtask_mt.weighting.base import TaskWeighting


class FixedWeighting(TaskWeighting):
    """total = sum_i w_i * L_i with constant weights (default 1 each)."""

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float] | None = None) -> None:
        super().__init__(tasks)
        weights = dict(weights or {})
        unknown = set(weights) - set(self.tasks)
        if unknown:
            raise ValueError(f"weights given for unknown tasks {sorted(unknown)}")
        values = [float(weights.get(t, 1.0)) for t in self.tasks]
        bad = {t: v for t, v in zip(self.tasks, values, strict=True)
               if not (math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"weights must be finite numbers >= 0, got {bad}")
        self.register_buffer("weights", torch.tensor(values))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (self.weights * self.stack(losses)).sum()

    def task_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))
