"""GradNorm (Chen et al., 2018): balance task gradient norms at the last shared layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from xtask_mt.weighting.base import StepContext, TaskWeighting


class GradNormWeighting(TaskWeighting):
    """Learnable weights w_i trained so that ||grad_W w_i L_i|| approaches
    mean_j ||grad_W w_j L_j|| * r_i ** asymmetry, with r_i the task's relative inverse
    training rate L_i(t) / L_i(0) normalised by its mean over tasks.

    L_i(0) is taken on the first training step only and stored in the state dict. The
    network is trained on sum_i w_i L_i with w detached; w gets its gradient from the
    GradNorm loss alone, and is renormalised to sum to the number of tasks after each step.
    W is the shared encoder's last layer (StepContext.last_shared_parameters). Its weight
    gradient bypasses a loss scaler, so it does not run under fp16.
    """

    supports_grad_scaler = False

    def __init__(self, tasks: Sequence[str], asymmetry: float = 1.5) -> None:
        super().__init__(tasks)
        if not asymmetry >= 0:
            raise ValueError(f"GradNorm asymmetry must be a number >= 0, got {asymmetry}")
        self.asymmetry = float(asymmetry)
        self.weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial_losses", torch.zeros(len(self.tasks)))
        self.register_buffer("initialised", torch.tensor(False))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (self.weights.detach() * self.stack(losses)).sum()

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        if not ctx.last_shared_parameters:
            raise ValueError("GradNorm needs the shared layer's parameters")
        self._set_weight_gradient(self.stack(losses), ctx.last_shared_parameters)
        return super().backward(losses, ctx)

    def _set_weight_gradient(self, stacked: torch.Tensor,
                             shared: Sequence[nn.Parameter]) -> None:
        detached = stacked.detach()
        if not bool(self.initialised):
            self.initial_losses.copy_(detached)
            self.initialised.fill_(True)
        norms = []
        for loss in stacked:
            grads = torch.autograd.grad(loss, list(shared), retain_graph=True,
                                        allow_unused=True)
            flat = torch.cat([g.reshape(-1) for g in grads if g is not None])
            norms.append(flat.float().norm())
        grad_norms = self.weights * torch.stack(norms)
        ratio = detached / self.initial_losses.clamp(min=1e-12)
        relative = ratio / ratio.mean().clamp(min=1e-12)
        target = (grad_norms.mean() * relative**self.asymmetry).detach()
        gradnorm_loss = (grad_norms - target).abs().sum()
        (grad,) = torch.autograd.grad(gradnorm_loss, self.weights)
        self.weights.grad = grad if self.weights.grad is None else self.weights.grad + grad

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        self.weights.clamp_(min=1e-4)
        self.weights.mul_(len(self.tasks) / self.weights.sum())

    def task_weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.weights.detach().tolist(), strict=True))
