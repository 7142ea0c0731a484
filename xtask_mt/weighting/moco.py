"""MoCo, Multi-objective gradient Correction (Fernando et al., ICLR 2023): MGDA's min-norm
weighting applied to tracked (averaged) task gradients, with the weights moved by one
projected gradient step per training step instead of solved, which removes the bias that
stochastic gradients give MGDA."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xtask_mt.weighting.gradients import SharedGradientMethod
from xtask_mt.weighting.simplex import project_to_simplex


class MoCoWeighting(SharedGradientMethod):
    """Each step t (from 1), with g_i the task gradients at the shared encoder:
    y_i <- y_i - b_t (y_i - g_i) with b_t = beta / t ** beta_sigma (y starts at 0);
    lam <- P(lam - c_t (Y Y^T + rho I) lam) with c_t = gamma / t ** gamma_sigma and P the
    projection onto the simplex (lam starts at 1/K); the encoder's gradient is Y^T lam.
    The heads get their own task gradients (the plain sum).

    The task gradients are averaged over the processes under DDP, so every process keeps the
    same y and lam. y holds one value per task and shared parameter (K times the encoder's
    size); it is in the checkpoint, so a resumed job continues it.
    """

    def __init__(self, tasks: Sequence[str], beta: float = 0.5, beta_sigma: float = 0.5,
                 gamma: float = 0.1, gamma_sigma: float = 0.5, rho: float = 0.0) -> None:
        super().__init__(tasks)
        if not 0 < beta <= 1:
            raise ValueError(f"beta must be a number in (0, 1], got {beta}")
        for name, value in (("gamma", gamma), ("beta_sigma", beta_sigma),
                            ("gamma_sigma", gamma_sigma), ("rho", rho)):
            if not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value}")
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
        self.gamma, self.gamma_sigma, self.rho = float(gamma), float(gamma_sigma), float(rho)
        k = len(self.tasks)
        self.register_buffer("tracked", torch.zeros(0))  # y, (K, P) from the first step on
        self.register_buffer("weights", torch.full((k,), 1.0 / k))  # lam
        self.register_buffer("steps", torch.tensor(0))

    def shared_update(self, jacobian: torch.Tensor, losses: Mapping[str, torch.Tensor]
                      ) -> torch.Tensor:
        if self.tracked.numel() == 0:
            self.tracked = torch.zeros_like(jacobian)
        self.steps += 1
        t = self.steps.double()
        rate = self.beta / t ** self.beta_sigma
        self.tracked.copy_(self.tracked - rate * (self.tracked - jacobian))
        gram = (self.tracked @ self.tracked.T).double()
        gram += self.rho * torch.eye(len(self.tasks), dtype=gram.dtype, device=gram.device)
        step = self.gamma / t ** self.gamma_sigma
        lam = self.weights.double()
        self.weights.copy_(project_to_simplex(lam - step * (gram @ lam)))
        return self.weights @ self.tracked

    def task_weights(self) -> dict[str, float]:
        """lam: the weights of the tracked task gradients (they sum to 1)."""
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))
