"""Gradient-based task weighting: one gradient per task at the shared encoder, combined by an
aggregator (PCGrad, MGDA, IMTL-G, CAGrad, Nash-MTL, Aligned-MTL, UPGrad, GradDrop, GradVac,
ConFIG) from torchjd, the maintained library of these methods.

The heads and transfer nets get their own task gradients (one backward pass over the sum of
the task losses); the shared encoder's gradient is replaced by the aggregate of the task
gradients. Per step that is K + 1 backward passes through the encoder for K tasks. Under fp16
the per-task gradients are unscaled before they are combined and the aggregate scaled back,
so the GradScaler still skips a step whose gradients overflowed. Under DDP the task gradients
are averaged over the processes before they are combined, so every process applies the same
update.
"""

from __future__ import annotations

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


class GradientAggregation(TaskWeighting):
    """`method` (a key of METHODS) with its torchjd arguments `options`, e.g. `c` for CAGrad.
    A method whose solver is not installed fails when built, naming what to install."""

    leaves_task_jacobian = True

    def __init__(self, tasks: Sequence[str], method: str, **options: Any) -> None:
        super().__init__(tasks)
        if method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
        from torchjd import aggregation  # imported here: only these methods need it

        if method == "nash_mtl":
            options = {"n_tasks": len(self.tasks), **options}
        self.method = method
        self.aggregator = getattr(aggregation, METHODS[method])(**options)

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The plain sum: what the heads are trained on, and what is logged."""
        return self.stack(losses).sum()

    def aggregate(self, jacobian: torch.Tensor) -> torch.Tensor:
        """(K, P) task gradients -> (P,) update direction."""
        return self.aggregator(jacobian)

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        shared = [p for p in ctx.shared_parameters if p.requires_grad]
        scale = float(ctx.scaler.get_scale()) if ctx.scaler is not None else 1.0
        jacobian = mean_over_processes(
            task_jacobian([ctx.scale(losses[t].float()) for t in self.tasks], shared))
        ctx.task_jacobian = jacobian / scale
        if torch.isfinite(jacobian).all():
            update = self.aggregate(ctx.task_jacobian) * scale
        else:  # overflow: keep it, so the scaler (or the non-finite check) skips the step
            update = jacobian.sum(dim=0)
        total = super().backward(losses, ctx)
        offset = 0
        for p in shared:
            p.grad = update[offset:offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
        return total

    def task_weights(self) -> dict[str, float]:
        return {}
