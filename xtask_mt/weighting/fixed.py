"""Fixed task weights (plain weighted sum)."""

from __future__ import annotations

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
        self.register_buffer(
            "weights", torch.tensor([float(weights.get(t, 1.0)) for t in self.tasks]))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (self.weights * self.stack(losses)).sum()

    def task_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))
