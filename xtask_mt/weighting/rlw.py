"""Random Loss Weighting (Lin et al., TMLR 2022): fresh random task weights every step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xtask_mt.weighting.base import TaskWeighting


class RLWWeighting(TaskWeighting):
    """total = sum_i w_i L_i with w = K softmax(z), z ~ N(0, 1) drawn each training step
    from torch's seeded stream (so a run replays its draws)."""

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)
        self.register_buffer("weights", torch.ones(len(self.tasks)))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        stacked = self.stack(losses)
        if self.training and torch.is_grad_enabled():
            z = torch.randn(len(self.tasks)).to(self.weights.device)
            self.weights.copy_(len(self.tasks) * torch.softmax(z, 0))
        return (self.weights * stacked).sum()

    def task_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))
