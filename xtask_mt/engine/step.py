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


def _non_finite_error(step: int, terms: dict[str, float]) -> NonFiniteLossError:
    bad = [k for k, v in terms.items() if not math.isfinite(v)]
    described = ", ".join(f"{k} = {terms[k]}" for k in bad) or "total (task weighting)"
    return NonFiniteLossError(
        f"non-finite loss at training step {step}: {described}. Lower optimizer.lr or check the "
        "data; the last good checkpoint is kept.")


def raise_non_finite(losses: LossOutput, step: int) -> None:
    """Raise NonFiniteLossError naming the step and the non-finite loss terms."""
    raise _non_finite_error(step, {k: float(v.detach()) for k, v in losses.terms.items()})


class NonFiniteWatch:
    """Remembers on the device the first step whose total loss was not finite, with its loss
    terms, so that the host need not look at every step: a look waits for the device (a
    host sync), which would stall a GPU that runs ahead of the host. `check()` is that look;
    the training loop calls it every trainer.sync_every steps and before anything is saved,
    so a non-finite step still stops training with its number and no checkpoint of it."""

    def __init__(self, device: torch.device) -> None:
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)
        self.names: tuple[str, ...] = ()
        self.values: torch.Tensor | None = None  # the loss terms of first_step

    def record(self, step: int, losses: LossOutput, total: torch.Tensor) -> None:
        """Note step `step` (device operations only)."""
        new = (self.first_step < 0) & ~torch.isfinite(total.detach())
        self.first_step = torch.where(new, step, self.first_step)
        values = torch.stack([v.detach().float() for v in losses.terms.values()])
        if self.values is None:
            self.names, self.values = tuple(losses.terms), values
        else:
            self.values = torch.where(new, values, self.values)

    def check(self) -> None:
        """Raise NonFiniteLossError if a recorded step (on any process) was not finite."""
        step = int(self.first_step)
        if not any_process(step >= 0):
            return
        if step < 0:
            raise NonFiniteLossError(
                "non-finite loss on another process of this DDP job; its log names the step. "
                "Lower optimizer.lr or check the data; the last good checkpoint is kept.")
        values = self.values.tolist() if self.values is not None else []
        raise _non_finite_error(step, dict(zip(self.names, values, strict=True)))


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
    cuda_graphs: bool = False  # runner compiled with CUDA graphs (compile_mode=reduce-overhead)

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
        # a trunk may say which of its parameters all tasks share (e.g. MMoE: the experts)
        shared = getattr(encoder, "shared_parameters", encoder.parameters)()
        return StepContext(list(shared), encoder.last_shared_parameters(),
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
               skip_nonfinite: bool = False, timer: PhaseTimer = _untimed,
               watch: NonFiniteWatch | None = None) -> StepResult:
    """Forward under autocast, losses in fp32, the weighting's backward, the update.

    A non-finite total (on any process) raises NonFiniteLossError, or with `skip_nonfinite`
    drops the step's gradients, leaves the parameters untouched and returns applied=False;
    both look at the loss now (a host sync). Given a `watch` (and no `skip_nonfinite`), the
    step only records its total there and applies the update: no host sync in the step.
    Under DDP the model's gradients are averaged by DDP and the weighting's here.
    """
    p = parts
    if p.cuda_graphs:  # the graphs may reuse the last step's output memory from here on
        torch.compiler.cudagraph_mark_step_begin()
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
    # a non-finite task loss makes the total non-finite: one check of the total
    if watch is not None and not skip_nonfinite:
        watch.record(step, losses, total)
    elif any_process(not torch.isfinite(total)):  # a host sync
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
