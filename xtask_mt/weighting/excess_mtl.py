"""ExcessMTL (He et al., ICML 2024): weigh tasks by their excess risk, the part of the loss
that training could still remove, so a task with noisy labels (high loss, little to gain)
does not take over the way it does under loss-based weighting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xtask_mt.weighting.base import StepContext, TaskWeighting
from xtask_mt.weighting.gradients import unscaled_task_jacobian


class ExcessMTLWeighting(TaskWeighting):
    """Each task's excess risk is estimated as e_i = g_i^T H_i^-1 g_i, with g_i its gradient
    at the shared encoder and H_i = diag(sqrt(sum of g_i^2 over the steps so far + 1e-7)) an
    Adagrad-style diagonal Hessian. The first step's e_i is kept as the scale; from the
    second on the weights move by exponentiated gradient, w_i <- w_i exp(step_size e_i /
    e_i(1)), renormalised to sum to K (w = 1 at first). The whole network is trained on
    sum_i w_i L_i.

    The task gradients are averaged over the processes under DDP, so every process keeps the
    same weights. The sums of squares hold one value per task and shared parameter (K times
    the encoder's size); they are in the checkpoint, so a resumed job continues them.
    """

    leaves_task_jacobian = True

    def __init__(self, tasks: Sequence[str], step_size: float = 0.01) -> None:
        super().__init__(tasks)
        if not step_size > 0:
            raise ValueError(f"step_size must be a number > 0, got {step_size}")
        self.step_size = float(step_size)
        k = len(self.tasks)
        self.register_buffer("squares", torch.zeros(0))  # (K, P) from the first step on
        self.register_buffer("initial_excess", torch.zeros(k))
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer("weights", torch.ones(k))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (self.weights * self.stack(losses)).sum()

    def update(self, jacobian: torch.Tensor) -> None:
        """One step of the weights from the (K, P) task gradients."""
        if self.squares.numel() == 0:
            self.squares = torch.zeros_like(jacobian)
        self.squares.add_(jacobian.square())
        excess = (jacobian.square() / (self.squares + 1e-7).sqrt()).sum(dim=1)
        if not bool(self.initialised):
            self.initial_excess.copy_(excess)
            self.initialised.fill_(True)
            return
        raised = self.weights * torch.exp(self.step_size * excess / self.initial_excess)
        self.weights.copy_(len(self.tasks) * raised / raised.sum())

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        _, jacobian = unscaled_task_jacobian(losses, self.tasks, ctx)
        if torch.isfinite(jacobian).all():  # else the total's gradients overflow too
            self.update(jacobian)
        return super().backward(losses, ctx)

    def task_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.weights.tolist(), strict=True))
