"""One metric accumulator per task, fed from the model's outputs batch by batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch

from xtask_mt.metrics.consistency_energy import ConsistencyEnergy


class TaskMetrics(Protocol):
    """What every task's accumulator offers (see SegmentationMetrics, DepthMetrics)."""

    def update(self, pred: torch.Tensor, batch: Mapping[str, torch.Tensor],
               transferred: Mapping[str, torch.Tensor]) -> None:
        """Add one batch: the direct prediction and, by edge name, the transferred ones."""

    def state_tensors(self) -> list[torch.Tensor]:
        """The sums; adding them across processes gives the metrics of the whole set."""

    def compute(self) -> dict[str, float]:
        """Figures keyed without prefix (e.g. miou, abs_err, consistency_<edge>)."""


class MetricCollection:
    """`accumulators` by task name; `incoming` names, per task, the edges whose transferred
    predictions target it (outputs are keyed by task and by edge name); `energy`, when
    given, the consistency energy over the edges."""

    def __init__(self, accumulators: Mapping[str, TaskMetrics],
                 incoming: Mapping[str, tuple[str, ...]],
                 energy: ConsistencyEnergy | None = None) -> None:
        self.tasks = dict(accumulators)
        self.incoming = {task: tuple(incoming.get(task, ())) for task in self.tasks}
        self.energy = energy

    @torch.no_grad()
    def update(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> None:
        for task, accumulator in self.tasks.items():
            transferred = {edge: out[edge] for edge in self.incoming[task] if edge in out}
            accumulator.update(out[task], batch, transferred)
        if self.energy is not None:
            self.energy.update(out)

    def state_tensors(self) -> list[torch.Tensor]:
        tensors = [t for accumulator in self.tasks.values() for t in accumulator.state_tensors()]
        return tensors + (self.energy.state_tensors() if self.energy is not None else [])

    def compute(self) -> dict[str, float]:
        result: dict[str, float] = {}
        for accumulator in self.tasks.values():
            result.update(accumulator.compute())
        if self.energy is not None:
            result.update(self.energy.compute())
        return result
