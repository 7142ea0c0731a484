"""What the project knows about a task, in one object per task, and the registry of them.

Everything that used to branch on "seg" / "depth" asks the task instead: the model (head
channels, what a transfer net receives), the loss composition (direct and consistency
losses, the consistency target), the metrics (accumulator, names and directions),
augmentation (how its maps flip and zoom), evaluation and previews (how it is drawn).
A new task is one subclass registered with `register_task`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from xtask_mt.data.transforms import FieldRule
from xtask_mt.errors import ConfigError
from xtask_mt.metrics import TaskMetrics

Batch = Mapping[str, torch.Tensor]
DirectLoss = Callable[[torch.Tensor, Batch], torch.Tensor]
"""(prediction, batch) -> loss"""
ConsistencyLoss = Callable[[torch.Tensor, torch.Tensor, Batch], torch.Tensor]
"""(transferred prediction, consistency target of the direct one, batch) -> loss"""


class Task(ABC):
    """One dense prediction task. Subclasses set the class attributes and the methods."""

    name: str
    sample_keys: tuple[str, ...]        # the keys of its ground truth in a sample
    direct_losses: tuple[str, ...]      # choices of loss/<name> (the first is the default)
    consistency_losses: tuple[str, ...]  # choices of loss/t<name>, for edges into this task
    consistency_options: tuple[str, ...] = ()  # keys of cfg.loss its consistency losses take
    headline_metrics: tuple[str, ...] = ()  # what Delta_m compares by default
    draw: Literal["labels", "map", "vector"] = "map"  # class ids, scalar values, unit vectors
    # the evaluation report: section title, (metric, label, shown in %) rows, a note under
    # them, whether the dataset's unit applies, and how a consistency figure reads
    title: str = ""
    report_rows: tuple[tuple[str, str, bool], ...] = ()
    report_note: str = ""
    in_dataset_unit: bool = False
    consistency_label: tuple[str, bool] = ("consistency", False)

    @abstractmethod
    def out_channels(self, num_classes: int) -> int:
        """Channels of its head (and of a transfer net's output into it)."""

    @abstractmethod
    def direct_loss(self, name: str) -> DirectLoss:
        """The direct loss `name` (one of `direct_losses`)."""

    @abstractmethod
    def consistency_loss(self, name: str, **options: Any) -> ConsistencyLoss:
        """The consistency loss `name` of a transferred prediction into this task."""

    @abstractmethod
    def metrics(self, num_classes: int, device: torch.device | str,
                edges: Sequence[str]) -> TaskMetrics:
        """A fresh accumulator; `edges` name the transfer edges into this task."""

    @property
    @abstractmethod
    def metric_directions(self) -> Mapping[str, bool]:
        """Metric name -> True where higher is better; `consistency` for its edges."""

    def head_activation(self, raw: torch.Tensor) -> torch.Tensor:
        """The prediction from its head's raw output: the output itself."""
        return raw

    def transfer_input(self, pred: torch.Tensor) -> torch.Tensor:
        """What a transfer net out of this task receives: the prediction itself."""
        return pred

    def consistency_target(self, pred: torch.Tensor) -> torch.Tensor:
        """What a transferred prediction into this task is trained towards: the detached
        direct prediction."""
        return pred.detach()

    def field_rules(self, depth_scaling: str) -> dict[str, FieldRule]:
        """How augmentation treats its sample maps beyond the default (mirror on a flip,
        values kept on a zoom)."""
        return {}

    @abstractmethod
    def disagreement(self, transferred: torch.Tensor, direct: torch.Tensor) -> torch.Tensor:
        """(N, H, W) per-pixel disagreement of a transferred prediction into this task with
        the direct one, needing no ground truth (the terms of the consistency energy)."""

    def energy_term(self, transferred: torch.Tensor, direct: torch.Tensor) -> torch.Tensor:
        """(N, H, W) per-pixel term of the seed's consistency energy for an edge into this
        task (metrics.consistency_energy): the disagreement itself, unless overridden."""
        return self.disagreement(transferred, direct)

    @abstractmethod
    def image_errors(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(N,) error of each image's prediction (NaN for an image without ground truth)."""

    @abstractmethod
    def prediction_map(self, pred: torch.Tensor) -> np.ndarray:
        """(N, H, W[, k]) array to draw or save: class ids, or the predicted values."""

    @abstractmethod
    def truth_map(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(values, valid) ground truth of a batch as prediction_map gives predictions."""


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add `task` to the registry under `task.name` (replacing one of the same name)."""
    _TASKS[task.name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove task `name` from the registry (a test's or a session's own task)."""
    _TASKS.pop(name, None)


def get_task(name: str) -> Task:
    """The registered task `name`; a ConfigError lists the known ones."""
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r} in model.tasks or model.transfer.edges; "
                          f"known tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def registered_tasks() -> tuple[str, ...]:
    return tuple(_TASKS)


def edge_name(source: str, target: str) -> str:
    """The name of the transfer edge source -> target: its module, output and loss term."""
    return f"{source}_to_{target}"


def higher_is_better(metric: str) -> bool:
    """Direction of a metric name as the tasks declare it; `metric` may carry a prefix such
    as `val/` or `best/`. Consistency metrics take the direction of their target task;
    losses and unknown names count as lower-is-better."""
    name = metric.rsplit("/", 1)[-1]
    if name.startswith("consistency_"):
        target = name.rsplit("_to_", 1)[-1]
        task = _TASKS.get(target)
        return bool(task and task.metric_directions.get("consistency", False))
    for task in _TASKS.values():
        if name in task.metric_directions:
            return task.metric_directions[name]
    return False
