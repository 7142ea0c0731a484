"""Scale-invariant weighting: the sum of the task losses' logarithms, so multiplying a loss
by a constant changes nothing in the gradients."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from xtask_mt.weighting.base import TaskWeighting


class ScaleInvariantWeighting(TaskWeighting):
    """total = sum_i log L_i; each task's gradient is scaled by 1 / L_i. A loss of exactly 0
    (no valid pixel) is floored at 1e-8 rather than taken as log 0."""

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.stack(losses).clamp(min=1e-8).log().sum()

    def task_weights(self) -> dict[str, float]:
        return {}
