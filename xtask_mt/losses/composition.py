"""Composition of the loss terms into one loss per task.

The task loss of a task s with transfer edges s -> t1, s -> t2, ... is

    (1 - sum_e w_e) * direct_s + sum_e w_e * consistency_e

where consistency_e compares the transferred prediction of edge e with the consistency
target of the direct prediction of t_e (detached), or, with against_ground_truth, with the
ground truth of t_e. Each consistency term sits in the task
loss of its source, whose decoder its gradient reaches. With the seed's two edges this is
seg = (1 - alpha) * seg + alpha * seg_to_depth, depth = (1 - gamma) * depth + gamma * depth_to_seg.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

Batch = Mapping[str, torch.Tensor]


@dataclass
class LossOutput:
    """`terms`: each loss term (by task or edge name); `tasks`: the per-task losses the
    weighting combines."""

    terms: dict[str, torch.Tensor]
    tasks: dict[str, torch.Tensor]


CONSISTENCY_TARGETS = ("prediction", "label")
"""What a transferred prediction is trained towards (loss.consistency_target): the detached
direct prediction of its target task (the method), or that task's ground truth (XTC, Zamir
et al. 2020)."""


def against_ground_truth(direct_loss: Callable[[torch.Tensor, Batch], torch.Tensor]
                         ) -> Callable[[torch.Tensor, torch.Tensor, Batch], torch.Tensor]:
    """A consistency loss that ignores the direct prediction: the target task's direct loss
    of the transferred prediction against the batch's ground truth."""
    return lambda transferred, _direct, batch: direct_loss(transferred, batch)


@dataclass(frozen=True)
class ConsistencyTerm:
    """The consistency loss of edge `edge` (source -> target) and its weight."""

    edge: str
    source: str
    target: str
    weight: float
    loss: Callable[[torch.Tensor, torch.Tensor, Batch], torch.Tensor]


class TaskObjective:
    """`direct`: each task's direct loss (prediction, batch); `targets`: each task's
    consistency target (direct prediction -> target); `consistency`: the edges' terms.

    Terms whose outputs the model does not produce (evaluation without transfer) are
    skipped, and their weight goes back to the direct term.
    """

    def __init__(self, direct: Mapping[str, Callable[[torch.Tensor, Batch], torch.Tensor]],
                 targets: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
                 consistency: Sequence[ConsistencyTerm] = ()) -> None:
        for term in consistency:
            if term.source not in direct or term.target not in direct:
                raise ValueError(f"edge {term.edge} joins tasks the objective lacks "
                                 f"({term.source} -> {term.target}; tasks {list(direct)})")
        self.direct = dict(direct)
        self.targets = dict(targets)
        self.consistency = tuple(consistency)

    def __call__(self, out: Mapping[str, torch.Tensor], batch: Batch) -> LossOutput:
        terms = {task: loss(out[task], batch) for task, loss in self.direct.items()}
        tasks = dict(terms)
        present = [term for term in self.consistency if term.edge in out]
        goals: dict[str, torch.Tensor] = {}  # one consistency target per task, made once
        for term in present:
            if term.target not in goals:
                goals[term.target] = self.targets[term.target](out[term.target])
            terms[term.edge] = term.loss(out[term.edge], goals[term.target], batch)
        for source in dict.fromkeys(term.source for term in present):
            own = [term for term in present if term.source == source]
            total = (1 - sum(term.weight for term in own)) * terms[source]
            for term in own:
                total = total + term.weight * terms[term.edge]
            tasks[source] = total
        return LossOutput(terms=terms, tasks=tasks)
