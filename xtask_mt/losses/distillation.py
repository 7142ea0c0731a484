"""Feature distillation from frozen single-task teachers (KD4MTL, Li and Bilen, ECCV-W 2020).

For each task t that has a teacher and each aligned level l of the shared trunk's features,
the multi-task network's feature s_l goes through task t's adaptor A_tl (a 1x1 convolution
without bias, from the trunk's channels to the teacher's), and both A_tl s_l and the
teacher's feature f_tl are scaled to unit length along the channels. Task t's distillation
loss is sum_l mean over samples and pixels of ||unit(A_tl s_l) - unit(f_tl)||^2. It is added
to task t's loss with `weight`, so every task weighting sees it as part of task t (with fixed
weights this is the original objective: task losses + weight x distillation losses).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from xtask_mt.losses.composition import LossOutput

_EPS = 1e-6  # keeps the normalisation finite where a feature vector is zero


def unit_channels(x: torch.Tensor) -> torch.Tensor:
    """`x` (N, C, H, W) divided by its L2 norm along the channels at each pixel."""
    return x / (x.pow(2).sum(1, keepdim=True) + _EPS).sqrt()


def feature_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over samples and pixels of the squared distance of the unit feature vectors."""
    return (unit_channels(student) - unit_channels(teacher)).pow(2).sum(1).mean()


class FeatureDistillation(nn.Module):
    """The per-task adaptors and the distillation losses they give.

    `student_channels`: channels of each trunk feature; `teacher_channels`: for each task
    with a teacher, the channels of each teacher trunk feature; `levels`: indices into both
    feature lists (negative counts from the end) of the aligned features.
    """

    def __init__(self, student_channels: Sequence[int],
                 teacher_channels: Mapping[str, Sequence[int]], levels: Sequence[int],
                 weight: float) -> None:
        super().__init__()
        self.levels = tuple(int(level) for level in levels)
        self.weight = float(weight)
        self.adaptors = nn.ModuleDict({
            task: nn.ModuleList(nn.Conv2d(student_channels[level], channels[level], 1,
                                          bias=False) for level in self.levels)
            for task, channels in teacher_channels.items()})

    def distances(self, student: Sequence[torch.Tensor],
                  teachers: Mapping[str, Sequence[torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Each task's distillation loss, in fp32, from the student's and teachers' trunk
        features (all levels; the teachers' are not differentiated)."""
        losses = {}
        for task, adaptors in self.adaptors.items():
            total = student[0].new_zeros((), dtype=torch.float32)
            for level, adaptor in zip(self.levels, adaptors, strict=True):
                mine, theirs = student[level], teachers[task][level]
                if mine.shape[-2:] != theirs.shape[-2:]:
                    raise ValueError(
                        f"feature level {level} is {tuple(mine.shape[-2:])} in the trained "
                        f"model but {tuple(theirs.shape[-2:])} in the {task} teacher; align "
                        "levels of the same resolution (kd.levels)")
                total = total + feature_distance(adaptor(mine.float()), theirs.detach().float())
            losses[task] = total
        return losses

    def add_to(self, losses: LossOutput, distances: Mapping[str, torch.Tensor]) -> LossOutput:
        """`losses` with each task's distillation loss logged as `kd_<task>` and added,
        times `weight`, to the task's loss."""
        terms, tasks = dict(losses.terms), dict(losses.tasks)
        for task, distance in distances.items():
            terms[f"kd_{task}"] = distance
            tasks[task] = tasks[task] + self.weight * distance
        return LossOutput(terms=terms, tasks=tasks)
