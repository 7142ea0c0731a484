"""Geometric Loss Strategy (Chennupati et al., CVPR workshops 2019): the geometric mean of
the task losses, which no loss's scale dominates."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from xtask_mt.weighting.base import TaskWeighting


class GeometricMeanWeighting(TaskWeighting):
    """total = (prod_i L_i) ^ (1/K); each task's gradient is scaled by total / (K L_i).
    A loss of exactly 0 (no valid pixel) is floored at 1e-8 rather than taken as log 0."""

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.stack(losses).clamp(min=1e-8).log().mean().exp()

    def task_weights(self) -> dict[str, float]:
        return {}
