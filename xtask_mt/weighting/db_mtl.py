"""DB-MTL, Dual-Balancing Multi-Task Learning (Lin et al., 2023): balance the loss scales by
training every task through its logarithm, and the gradient magnitudes by scaling each task's
(averaged) gradient at the shared encoder to the largest one's norm."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xtask_mt.weighting.base import linearised_total, mean_over_processes
from xtask_mt.weighting.gradients import SharedGradientMethod


class DBMTLWeighting(SharedGradientMethod):
    """Every task is trained on log(L_i + eps): the heads get grad L_i / (L_i + eps). At the
    shared encoder each task's log-loss gradient g_i enters an exponential moving average
    h_i <- b_t h_i + (1 - b_t) g_i, b_t = beta / t ** beta_sigma (t the step, from 1; h starts
    at 0), and the encoder's gradient is sum_i (max_j |h_j| / |h_i|) h_i.

    g_i is the task gradient divided by the loss, both averaged over the processes under DDP,
    so every process keeps the same h and trains what one process with the global batch
    would. h holds one value per task and shared parameter (K times the encoder's size); it
    is in the checkpoint, so a resumed job continues it.
    """

    def __init__(self, tasks: Sequence[str], beta: float = 0.9, beta_sigma: float = 0.0,
                 eps: float = 1e-8) -> None:
        super().__init__(tasks)
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must be a number in [0, 1], got {beta}")
        if not beta_sigma >= 0:
            raise ValueError(f"beta_sigma must be a number >= 0, got {beta_sigma}")
        if not eps > 0:
            raise ValueError(f"eps must be a number > 0, got {eps}")
        self.beta, self.beta_sigma, self.eps = float(beta), float(beta_sigma), float(eps)
        self.register_buffer("tracked", torch.zeros(0))  # (K, P) from the first step on
        self.register_buffer("steps", torch.tensor(0))
        self.register_buffer("weights", torch.ones(len(self.tasks)))

    def _loss_means(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return mean_over_processes(self.stack(losses).detach()).clamp(min=0) + self.eps

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """sum_i log(L_i + eps), with L_i averaged over the processes under DDP."""
        means = self._loss_means(losses)
        return linearised_total(means.log().sum(), 1 / means, self.stack(losses))

    def shared_update(self, jacobian: torch.Tensor, losses: Mapping[str, torch.Tensor]
                      ) -> torch.Tensor:
        log_grads = jacobian / self._loss_means(losses)[:, None]
        if self.tracked.numel() == 0:
            self.tracked = torch.zeros_like(log_grads)
        self.steps += 1
        keep = self.beta / self.steps.double() ** self.beta_sigma
        self.tracked.copy_(keep * self.tracked + (1 - keep) * log_grads)
        norms = self.tracked.norm(dim=1)
        self.weights.copy_(norms.max() / (norms + self.eps))
        return self.weights @ self.tracked

    def task_weights(self) -> dict[str, float]:
        """The last step's scale of each task's averaged log-loss gradient."""
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))
