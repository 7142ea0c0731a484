"""One training step, the same for the training loop and benchmarks/train_step.py."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from xtask_mt.engine.distillation import Distillation
from xtask_mt.errors import UserError
from xtask_mt.losses import LossOutput, TaskObjective
from xtask_mt.runtime.distributed import any_process, average_gradients_
from xtask_mt.runtime.precision import StepOptions
from xtask_mt.weighting import (
    StepContext,
    TaskWeighting,
    encoder_features,
    mean_over_processes,
)
from xtask_mt.weighting.gradients import task_jacobian

PhaseTimer = Callable[[str], contextlib.AbstractContextManager]
"""phase name ('forward_loss', 'backward', 'optimizer') -> a context around that phase"""


class NonFiniteLossError(UserError):
    """A loss became NaN or inf; training stops rather than continue silently."""


def raise_non_finite(losses: LossOutput, step: int) -> None:
    """Raise NonFiniteLossError naming the step and the non-finite loss terms."""
    values = {k: float(v.detach()) for k, v in losses.terms.items()}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    described = ", ".join(f"{k} = {values[k]}" for k in bad) or "total (task weighting)"
    raise NonFiniteLossError(
        f"non-finite loss at training step {step}: {described}. Lower optimizer.lr or check the "
        "data; the last good checkpoint is kept.")


@dataclass
class TrainingParts:
    """What a training step works with. `runner` is the model as it runs (possibly wrapped
    in DDP or torch.compile); `model` is the plain model whose encoder is shared."""

    runner: nn.Module
    model: nn.Module
    objective: TaskObjective
    weighting: TaskWeighting
    optimizer: torch.optim.Optimizer
    options: StepOptions
    scaler: torch.amp.GradScaler | None = None
    grad_stats_every: int = 0  # > 0: gradient diagnostics every this many steps
    distillation: Distillation | None = None  # method=kd4mtl

    def losses(self, batch: dict[str, torch.Tensor], features: list[torch.Tensor],
               wants_features: bool = False) -> LossOutput:
        """Forward `batch` (under autocast) and its losses (in fp32), distillation included;
        the trunk's outputs are collected into `features` when asked or distilled."""
        image = self.options.image(batch["image"])
        wanted = wants_features or self.distillation is not None
        with encoder_features(self.model.encoder, features, wanted), self.options.autocast():
            out = self.runner(image)
        losses = self.objective(out, batch)
        if self.distillation is not None:
            losses = self.distillation(losses, features, image, self.options)
        return losses

    def context(self, step: int) -> StepContext:
        encoder = self.model.encoder
        return StepContext(list(encoder.parameters()), encoder.last_shared_parameters(),
                           self.scaler, step)


@dataclass
class StepResult:
    """The step's losses and total (detached use only); `applied` is False when the step
    was skipped for a non-finite loss."""

    losses: LossOutput
    total: torch.Tensor
    applied: bool
    grad_stats: dict[str, torch.Tensor] | None = None


def gradient_stats(tasks: tuple[str, ...], jacobian: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each task's gradient norm, the pairwise cosine similarities and the condition number
    of the task Gram matrix J J^T, from the (K, P) task gradients at the shared encoder."""
    j = jacobian.double()
    norms = j.norm(dim=1)
    stats = {f"norm_{t}": n for t, n in zip(tasks, norms, strict=True)}
    unit = j / norms.clamp(min=1e-30)[:, None]
    cosines = unit @ unit.T
    for a in range(len(tasks)):
        for b in range(a + 1, len(tasks)):
            stats[f"cos_{tasks[a]}_{tasks[b]}"] = cosines[a, b]
    eigen = torch.linalg.eigvalsh(j @ j.T)
    stats["gram_cond"] = eigen[-1] / eigen[0].clamp(min=1e-30)
    return stats


def _task_gradient_stats(parts: TrainingParts, losses: LossOutput,
                         ctx: StepContext) -> dict[str, torch.Tensor]:
    """gradient_stats of this step (K extra backward passes through the encoder), the task
    gradients averaged over the processes under DDP."""
    tasks = parts.weighting.tasks
    shared = [p for p in ctx.shared_parameters if p.requires_grad]
    jacobian = mean_over_processes(task_jacobian([losses.tasks[t].float() for t in tasks],
                                                 shared))
    return gradient_stats(tasks, jacobian)


@contextlib.contextmanager
def _frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Batch norm layers normalise with the batch's statistics but leave their running
    statistics as they are (momentum 0), so an extra forward pass does not count twice."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None
              else None) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _losses_after_step(parts: TrainingParts, batch: dict[str, torch.Tensor]
                       ) -> Callable[[], dict[str, torch.Tensor]]:
    """A callable giving the task losses of `batch` under the updated model, without a
    graph and without touching the batch norm running statistics."""

    def compute() -> dict[str, torch.Tensor]:
        with torch.no_grad(), _frozen_norm_statistics(parts.model):
            return dict(parts.losses(batch, []).tasks)

    return compute


def _untimed(_phase: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def train_step(parts: TrainingParts, batch: dict[str, torch.Tensor], step: int,
               skip_nonfinite: bool = False, timer: PhaseTimer = _untimed) -> StepResult:
    """Forward under autocast, losses in fp32, the weighting's backward, the update.

    A non-finite total (on any process) raises NonFiniteLossError, or with `skip_nonfinite`
    drops the step's gradients, leaves the parameters untouched and returns applied=False.
    Under DDP the model's gradients are averaged by DDP and the weighting's here.
    """
    p = parts
    p.optimizer.zero_grad(set_to_none=True)
    ctx = p.context(step)
    ctx.losses_after_step = _losses_after_step(p, batch)
    with timer("forward_loss"):
        losses = p.losses(batch, ctx.features, p.weighting.needs_features)
    diagnosed = bool(p.grad_stats_every) and step % p.grad_stats_every == 0
    stats = _task_gradient_stats(p, losses, ctx) \
        if diagnosed and not p.weighting.leaves_task_jacobian else None
    with timer("backward"):
        total = p.weighting.backward(losses.tasks, ctx)
        average_gradients_(p.weighting.parameters())
        if p.distillation is not None:
            average_gradients_(p.distillation.loss.parameters())
    if diagnosed and ctx.task_jacobian is not None:  # the method's own task gradients
        stats = gradient_stats(p.weighting.tasks, ctx.task_jacobian)
    # a non-finite task loss makes the total non-finite: one check (one host sync) a step
    finite = not any_process(not torch.isfinite(total))
    if not finite:
        if not skip_nonfinite:
            raise_non_finite(losses, step)
        p.optimizer.zero_grad(set_to_none=True)
        return StepResult(losses, total, applied=False, grad_stats=stats)
    with timer("optimizer"):
        if p.scaler is None:
            p.optimizer.step()
        else:
            p.scaler.step(p.optimizer)
            p.scaler.update()
        p.weighting.after_step(ctx)
    return StepResult(losses, total, applied=True, grad_stats=stats)
