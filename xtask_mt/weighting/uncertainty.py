"""Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, 2018)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from xtask_mt.weighting.base import TaskWeighting


class UncertaintyWeighting(TaskWeighting):
    """total = sum_i 0.5 * exp(-s_i) * L_i + s_i with learnable s_i (init 0).

    A task whose loss stays large drives its s_i up and so its weight down.
    """

    def __init__(self, tasks: Sequence[str], init: float = 0.0) -> None:
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init)))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        s = self.log_vars
        return (0.5 * torch.exp(-s) * self.stack(losses) + s).sum()

    def task_weights(self) -> dict[str, float]:
        weights = 0.5 * torch.exp(-self.log_vars.detach())
        return dict(zip(self.tasks, weights.tolist(), strict=True))
