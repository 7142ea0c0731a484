"""FairGrad (Ban and Ji, ICML 2024): task weights from alpha-fair resource allocation, where
each task's utility is its loss decrease along the update; alpha = 1 is proportional fairness
(Nash-MTL's bargaining), larger alpha moves towards max-min fairness."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xtask_mt.weighting.base import StepContext, TaskWeighting
from xtask_mt.weighting.gradients import unscaled_task_jacobian


class FairGradWeighting(TaskWeighting):
    """The weights w > 0 solve G G^T w = w ** (-1 / alpha) (G the (K, P) task gradients at
    the shared encoder), found by torchjd's FairGrad weighting (scipy's bounded least squares
    from w = 1/K each step). The whole network is trained on sum_i w_i L_i, whose gradient at
    the encoder is G^T w; torchjd's FairGrad aggregator would give the heads the plain sum
    instead, where the reference trains them on the weighted one.

    The task gradients are averaged over the processes under DDP, so every process uses the
    same weights. Per step: K backward passes for G plus one over the weighted sum.
    """

    leaves_task_jacobian = True

    def __init__(self, tasks: Sequence[str], alpha: float = 1.0) -> None:
        super().__init__(tasks)
        if not alpha > 0:
            raise ValueError(f"alpha must be a number > 0, got {alpha}")
        from torchjd.aggregation import FairGradWeighting as Solver  # only this needs scipy

        self.alpha = float(alpha)
        self.solver = Solver(self.alpha)
        self.register_buffer("weights", torch.full((len(self.tasks),), 1.0 / len(self.tasks)))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (self.weights * self.stack(losses)).sum()

    def solve(self, gram: torch.Tensor) -> torch.Tensor:
        """(K, K) Gram matrix of the task gradients -> the weights (K,)."""
        return self.solver(gram.detach().double().cpu())

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        _, jacobian = unscaled_task_jacobian(losses, self.tasks, ctx)
        if torch.isfinite(jacobian).all():  # else the total's gradients overflow too
            self.weights.copy_(self.solve(jacobian @ jacobian.T))
        return super().backward(losses, ctx)

    def task_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))
