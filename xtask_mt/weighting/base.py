"""The interface every task weighting implements: it owns the backward pass.

A method receives the per-task losses and a StepContext (the shared parameters, the
encoder's output features when it asks for them, the grad scaler, the step) and leaves the
gradients in `.grad`. A method that only turns the losses into one scalar implements
`combine` and keeps the default `backward`; one that works on gradients (one per task)
overrides `backward`. A new method is one module with a subclass plus one YAML file under
conf/weighting/ whose `_target_` names the class (see config.build.build_weighting).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class StepContext:
    """What a weighting may need besides the task losses in one training step."""

    shared_parameters: Sequence[nn.Parameter]       # the shared encoder's parameters
    last_shared_parameters: Sequence[nn.Parameter]  # its last layer's (GradNorm's W)
    scaler: torch.amp.GradScaler | None = None      # fp16 loss scaling, None otherwise
    step: int = 0                                   # global training step
    features: list[torch.Tensor] = field(default_factory=list)  # encoder outputs, on request

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """`loss` as it must be backpropagated: scaled under fp16, as is otherwise."""
        return self.scaler.scale(loss) if self.scaler is not None else loss


class TaskWeighting(nn.Module, ABC):
    """Balances the task losses. Learnable weights are parameters of this module and are
    optimised with the model (at `weighting.lr`)."""

    supports_grad_scaler: bool = True  # False: cannot run with fp16 loss scaling
    needs_features: bool = False       # True: the step fills StepContext.features

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

    def after_step(self) -> None:
        """Hook run after optimizer.step(); e.g. to renormalise weights."""

    def epoch_end(self, mean_losses: Mapping[str, float]) -> None:
        """Hook run after each training epoch with that epoch's mean task losses (by task),
        e.g. for methods that weigh by the rate at which losses fall."""
