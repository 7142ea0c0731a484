"""Dynamic Weight Average (Liu, Johns and Davison, CVPR 2019): weigh each task by how slowly
its loss fell over the last two epochs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xtask_mt.weighting.base import TaskWeighting


class DWAWeighting(TaskWeighting):
    """total = sum_i w_i L_i with w = K softmax(r / T), r_i = L_i(t-1) / L_i(t-2) from the
    mean losses of the previous two epochs (w = 1 for the first two epochs)."""

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        if not temperature > 0:
            raise ValueError(f"temperature must be a number > 0, got {temperature}")
        self.temperature = float(temperature)
        self.register_buffer("weights", torch.ones(len(self.tasks)))
        self.register_buffer("history", torch.zeros(2, len(self.tasks)))  # t-2, t-1
        self.register_buffer("epochs_seen", torch.tensor(0))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (self.weights * self.stack(losses)).sum()

    @torch.no_grad()
    def epoch_end(self, mean_losses: Mapping[str, float]) -> None:
        latest = torch.tensor([float(mean_losses[t]) for t in self.tasks],
                              device=self.history.device)
        self.history.copy_(torch.stack([self.history[1], latest]))
        self.epochs_seen += 1
        if int(self.epochs_seen) >= 2:
            rate = self.history[1] / self.history[0].clamp(min=1e-12)
            self.weights.copy_(len(self.tasks) * torch.softmax(rate / self.temperature, 0))

    def task_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))
