"""SDMGrad, Stochastic Direction-oriented Multi-objective Gradient descent (Xiao et al.,
NeurIPS 2023): MGDA's min-norm problem regularised towards the average gradient, its task
weights found by a few projected gradient steps warm-started from the last step's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xtask_mt.weighting.gradients import SharedGradientMethod
from xtask_mt.weighting.simplex import project_to_simplex


class SDMGradWeighting(SharedGradientMethod):
    """With G the (K, P) task gradients at the shared encoder and g0 their mean, the weights
    w (on the simplex) approximately minimise |G^T w|^2 / 2 + lam <G^T w, g0>: `niter`
    steps of heavy-ball gradient descent (step `inner_lr`, momentum `inner_momentum`, its
    velocity starting at 0 each training step) on A w + lam A 1/K with A = G G^T / s^2 (s the
    mean task gradient norm), each followed by the projection onto the simplex; w starts from
    the last step's (1/K at first). The encoder's gradient is (G^T w + lam g0) / (1 + lam);
    the heads get their own task gradients (the plain sum).

    The paper draws three batches per step: one for the direction and two independent ones
    for an unbiased A. A step here has one batch, whose gradients serve all three (the
    reference NYUv2 code's three gradient buffers are likewise one tensor). The task gradients
    are averaged over the processes under DDP, so every process keeps the same w.
    """

    def __init__(self, tasks: Sequence[str], lam: float = 0.3, niter: int = 20,
                 inner_lr: float = 5.0, inner_momentum: float = 0.5) -> None:
        super().__init__(tasks)
        if not lam >= 0:
            raise ValueError(f"lam must be a number >= 0, got {lam}")
        if not (isinstance(niter, int) and niter >= 1):
            raise ValueError(f"niter must be an integer >= 1, got {niter}")
        if not inner_lr > 0:
            raise ValueError(f"inner_lr must be a number > 0, got {inner_lr}")
        if not 0 <= inner_momentum < 1:
            raise ValueError(f"inner_momentum must be a number in [0, 1), got {inner_momentum}")
        self.lam, self.niter = float(lam), niter
        self.inner_lr, self.inner_momentum = float(inner_lr), float(inner_momentum)
        k = len(self.tasks)
        self.register_buffer("simplex_weights", torch.full((k,), 1.0 / k))
        self.register_buffer("weights", torch.full((k,), 1.0 / k))

    def solve(self, gram: torch.Tensor) -> torch.Tensor:
        """(K, K) Gram matrix of the task gradients -> w, warm-started from the last w."""
        scale = gram.diagonal().clamp(min=0).sqrt().mean()
        a = gram.double() / (scale.double() ** 2 + 1e-8)
        pull = self.lam * a.mean(dim=1)
        w = self.simplex_weights.double()
        velocity = torch.zeros_like(w)
        for _ in range(self.niter):
            velocity = self.inner_momentum * velocity + a @ w + pull
            w = project_to_simplex(w - self.inner_lr * velocity)
        self.simplex_weights.copy_(w)
        return self.simplex_weights

    def shared_update(self, jacobian: torch.Tensor, losses: Mapping[str, torch.Tensor]
                      ) -> torch.Tensor:
        w = self.solve(jacobian @ jacobian.T)
        self.weights.copy_((w + self.lam / len(self.tasks)) / (1 + self.lam))
        return self.weights @ jacobian

    def task_weights(self) -> dict[str, float]:
        """The last step's weight of each task gradient, (w_i + lam / K) / (1 + lam)."""
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))
