"""Gradient-based task weighting: one gradient per task at the shared encoder, combined by an
aggregator (PCGrad, MGDA, IMTL-G, CAGrad, Nash-MTL, Aligned-MTL, UPGrad, GradDrop, GradVac,
ConFIG) from torchjd, the maintained library of these methods. SharedGradientMethod is the
base of these and of the methods written here (DB-MTL, MoCo, SDMGrad); unscaled_task_jacobian
is how every method that reads task gradients (FairGrad, ExcessMTL too) gets them.

The heads and transfer nets get their own task gradients (one backward pass over the sum of
the task losses); the shared encoder's gradient is replaced by the aggregate of the task
gradients. Per step that is K + 1 backward passes through the encoder for K tasks. Under fp16
the per-task gradients are unscaled before they are combined and the aggregate scaled back,
so the GradScaler still skips a step whose gradients overflowed. Under DDP the task gradients
are averaged over the processes before they are combined, so every process applies the same
update.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from xtask_mt.weighting.base import StepContext, TaskWeighting, mean_over_processes

# aggregator names (the YAML's `method`) -> torchjd.aggregation class names
METHODS = {"pcgrad": "PCGrad", "mgda": "MGDA", "imtl_g": "IMTLG", "cagrad": "CAGrad",
           "nash_mtl": "NashMTL", "aligned_mtl": "AlignedMTL", "upgrad": "UPGrad",
           "graddrop": "GradDrop", "gradvac": "GradVac", "config": "ConFIG"}


def task_jacobian(losses: Sequence[torch.Tensor], shared: Sequence[nn.Parameter]
                  ) -> torch.Tensor:
    """(K, P) matrix: row i is the gradient of losses[i] at the shared parameters, flattened
    (zeros where a loss does not reach a parameter). The graph is kept for a later backward."""
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, list(shared), retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                               for g, p in zip(grads, shared, strict=True)]).float())
    return torch.stack(rows)


def unscaled_task_jacobian(losses: Mapping[str, torch.Tensor], tasks: Sequence[str],
                           ctx: StepContext) -> tuple[list[nn.Parameter], torch.Tensor]:
    """The shared parameters that train and the (K, P) gradients of the task losses at them,
    unscaled (fp16) and averaged over the processes (DDP); left in ctx.task_jacobian for the
    gradient diagnostics. The graph is kept for the backward pass that follows."""
    shared = [p for p in ctx.shared_parameters if p.requires_grad]
    jacobian = mean_over_processes(
        task_jacobian([ctx.scale(losses[t].float()) for t in tasks], shared))
    ctx.task_jacobian = jacobian / _loss_scale(ctx)
    return shared, ctx.task_jacobian


def _loss_scale(ctx: StepContext) -> float:
    return float(ctx.scaler.get_scale()) if ctx.scaler is not None else 1.0


class SharedGradientMethod(TaskWeighting):
    """A method that replaces the shared encoder's gradient by `shared_update` of the task
    gradients there; the heads and transfer nets get the gradients of `combine` (the plain
    sum unless a subclass says otherwise)."""

    leaves_task_jacobian = True

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The plain sum: what the heads are trained on, and what is logged."""
        return self.stack(losses).sum()

    @abstractmethod
    def shared_update(self, jacobian: torch.Tensor, losses: Mapping[str, torch.Tensor]
                      ) -> torch.Tensor:
        """(K, P) unscaled task gradients (finite) and this process's task losses -> the
        (P,) gradient of the shared parameters; called once per step, so it may keep state."""

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        shared, jacobian = unscaled_task_jacobian(losses, self.tasks, ctx)
        scale = _loss_scale(ctx)
        if torch.isfinite(jacobian).all():
            update = self.shared_update(jacobian, losses) * scale
        else:  # overflow: keep it, so the scaler (or the non-finite check) skips the step
            update = jacobian.sum(dim=0) * scale
        total = super().backward(losses, ctx)
        offset = 0
        for p in shared:
            p.grad = update[offset:offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
        return total


class GradientAggregation(SharedGradientMethod):
    """`method` (a key of METHODS) with its torchjd arguments `options`, e.g. `c` for CAGrad.
    A method whose solver is not installed fails when built, naming what to install."""

    def __init__(self, tasks: Sequence[str], method: str, **options: Any) -> None:
        super().__init__(tasks)
        if method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
        from torchjd import aggregation  # imported here: only these methods need it

        if method == "nash_mtl":
            options = {"n_tasks": len(self.tasks), **options}
        self.method = method
        self.aggregator = getattr(aggregation, METHODS[method])(**options)

    def aggregate(self, jacobian: torch.Tensor) -> torch.Tensor:
        """(K, P) task gradients -> (P,) update direction."""
        return self.aggregator(jacobian)

    def shared_update(self, jacobian: torch.Tensor, losses: Mapping[str, torch.Tensor]
                      ) -> torch.Tensor:
        return self.aggregate(jacobian)

    def task_weights(self) -> dict[str, float]:
        return {}
