"""The interface every task weighting implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import torch
from torch import nn


class TaskWeighting(nn.Module, ABC):
    """Turns per-task losses into the one scalar that is backpropagated once per step.

    Learnable weights are parameters of this module and are optimised with the model.
    """

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
        """The weighted total loss to call backward() on."""

    @abstractmethod
    def task_weights(self) -> dict[str, float]:
        """Current effective weight of each task, for logging."""

    def after_step(self) -> None:
        """Hook run after optimizer.step(); e.g. to renormalise weights."""
