"""The interface every task weighting implements: it owns the backward pass.

A method receives the per-task losses and a StepContext (the shared parameters, the
encoder's output features when it asks for them, the grad scaler, the step) and leaves the
gradients in `.grad`. A method that only turns the losses into one scalar implements
`combine` and keeps the default `backward`; one that works on gradients (one per task)
overrides `backward`. A new method is one module with a subclass plus one YAML file under
conf/weighting/ whose `_target_` names the class (see config.build.build_weighting).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class StepContext:
    """What a weighting may need besides the task losses in one training step."""

    shared_parameters: Sequence[nn.Parameter]       # the shared encoder's parameters
    last_shared_parameters: Sequence[nn.Parameter]  # its last layer's (GradNorm's W)
    scaler: torch.amp.GradScaler | None = None      # fp16 loss scaling, None otherwise
    step: int = 0                                   # global training step
    features: list[torch.Tensor] = field(default_factory=list)  # encoder outputs, on request
    # the task losses of this step's batch recomputed with the updated model (no graph);
    # set by the training step for after_step, costs one forward pass when called
    losses_after_step: Callable[[], Mapping[str, torch.Tensor]] | None = None
    # (K, P) unscaled task gradients at the shared encoder, averaged over processes, left by
    # a method that sets `leaves_task_jacobian` (the gradient diagnostics reuse them)
    task_jacobian: torch.Tensor | None = None

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """`loss` as it must be backpropagated: scaled under fp16, as is otherwise."""
        return self.scaler.scale(loss) if self.scaler is not None else loss


class TaskWeighting(nn.Module, ABC):
    """Balances the task losses. Learnable weights are parameters of this module and are
    optimised with the model (at `weighting.lr`)."""

    supports_grad_scaler: bool = True  # False: cannot run with fp16 loss scaling
    needs_features: bool = False       # True: the step fills StepContext.features
    supports_compile: bool = True      # False: cannot run with trainer.compile=true
    leaves_task_jacobian: bool = False  # True: backward fills StepContext.task_jacobian

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("task weighting needs at least one task")
        self.tasks = tuple(tasks)

    def stack(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Task losses as one vector in `self.tasks` order."""
        missing = [t for t in self.tasks if t not in losses]
        if missing:
            raise KeyError(f"task losses missing for {missing}; got {sorted(losses)}")
        return torch.stack([losses[t].float() for t in self.tasks])

    @abstractmethod
    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighted total loss (what the default backward differentiates, and what is
        logged as `total`)."""

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        """Leave the gradients of this step in `.grad`; return the total for logging.
        Default: one backward pass over `combine(losses)`."""
        total = self.combine(losses)
        ctx.scale(total).backward()
        return total

    @abstractmethod
    def task_weights(self) -> dict[str, float]:
        """Current effective weight of each task, for logging."""

    def after_step(self, ctx: StepContext) -> None:
        """Hook run after optimizer.step(); e.g. to renormalise weights, or to compare the
        losses before and after the update (ctx.losses_after_step)."""

    def epoch_end(self, mean_losses: Mapping[str, float]) -> None:
        """Hook run after each training epoch with that epoch's mean task losses (by task),
        e.g. for methods that weigh by the rate at which losses fall."""

    def _load_from_state_dict(self, state_dict: Mapping[str, torch.Tensor], prefix: str,
                              *args: object, **kwargs: object) -> None:
        """A buffer registered empty, whose shape is known only at the first step (e.g. one
        value per shared parameter), takes the shape of the saved one before it is loaded."""
        for name, buffer in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if buffer is not None and buffer.numel() == 0 and saved is not None:
                self._buffers[name] = torch.empty(saved.shape, dtype=buffer.dtype,
                                                  device=buffer.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@contextlib.contextmanager
def encoder_features(encoder: nn.Module, into: list[torch.Tensor], wanted: bool) -> Iterator[None]:
    """When `wanted`, hand the decoders an alias of each encoder output and collect the
    aliases into `into`: gradients taken at an alias are those of the decoders alone (not of
    the encoder's own later layers), and a hook on an alias can replace that gradient."""
    if not wanted:
        yield
        return

    def alias(_module: nn.Module, _args: object, out: list[torch.Tensor]) -> list[torch.Tensor]:
        aliases = [f.view_as(f) for f in out]
        into.extend(aliases)
        return aliases

    handle = encoder.register_forward_hook(alias)
    try:
        yield
    finally:
        handle.remove()


def mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """`values` averaged over the DDP processes (a new tensor), or `values` without DDP:
    what keeps a method's state and its update the same on every process."""
    if not dist.is_initialized():
        return values
    total = values.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def linearised_total(value: torch.Tensor, weights: torch.Tensor, losses: torch.Tensor
                     ) -> torch.Tensor:
    """A total whose value is `value` and whose gradient is sum_i weights_i grad losses_i.
    A nonlinear scalarisation of the losses evaluated (with its weights, its derivatives) at
    the losses averaged over the processes trains, once DDP averages the gradients, what one
    process with the global batch trains; without DDP it is the scalarisation itself."""
    return value + (weights * (losses - losses.detach())).sum()
