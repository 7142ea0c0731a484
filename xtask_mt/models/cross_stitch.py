"""Cross-stitch networks (Misra et al., CVPR 2016) for dense prediction.

One ResNet backbone per task; after each of the five stages a cross-stitch unit replaces
every task's map by a learned linear combination of all tasks' maps at that stage,
x_k <- sum_j a[s, k, j] x_j, with one scalar per stage and (task, task) pair (the paper's
unit; 5 K^2 parameters), initialised to keep 0.9 of a task's own map and to share the other
0.1 evenly among the other tasks (the paper's 0.9 / 0.1 for two tasks). The stitched map of
each stage is what the next stage of that task's backbone reads and what its decoder reads.

Every task's loss reaches every backbone through the units, so all backbones and units are
the shared parameters.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from xtask_mt.models.sharing import (
    LEVELS,
    DecoderFactory,
    EncoderFactory,
    last_conv_weight,
    stages,
    task_heads,
)


class CrossStitchTrunk(nn.Module):
    """`num_tasks` backbones joined by a cross-stitch unit after each stage."""

    def __init__(self, encoder: EncoderFactory, num_tasks: int, self_weight: float = 0.9
                 ) -> None:
        super().__init__()
        self.backbones = nn.ModuleList(encoder() for _ in range(num_tasks))
        k = num_tasks
        unit = torch.full((k, k), (1.0 - self_weight) / (k - 1)) if k > 1 else torch.zeros(1, 1)
        unit.fill_diagonal_(self_weight if k > 1 else 1.0)
        self.stitch = nn.Parameter(unit.expand(LEVELS, k, k).clone())
        self.channels: tuple[int, ...] = self.backbones[0].channels * k

    def shared_parameters(self) -> list[nn.Parameter]:
        """Everything: each task's loss reaches every backbone through the units."""
        return list(self.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [last_conv_weight(b) for b in self.backbones]

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        per_task = [stages(b) for b in self.backbones]
        maps = [image] * len(per_task)
        out: list[list[torch.Tensor]] = [[] for _ in per_task]
        for s in range(LEVELS):
            stage_out = [task_stages[s](x) for task_stages, x in zip(per_task, maps, strict=True)]
            unit = self.stitch[s].to(stage_out[0].dtype)
            maps = [sum(unit[k, j] * x for j, x in enumerate(stage_out))
                    for k in range(len(stage_out))]
            for k, x in enumerate(maps):
                out[k].append(x)
        return [x for task_maps in out for x in task_maps]


def build_cross_stitch(heads: Mapping[str, int], encoder: EncoderFactory,
                       decoder: DecoderFactory, input_size: tuple[int, int],
                       self_weight: float = 0.9) -> tuple[CrossStitchTrunk, dict[str, nn.Module]]:
    """The trunk and a U-Net decoder per task (task -> output channels)."""
    if not 0.0 < self_weight <= 1.0:
        raise ValueError(f"model.sharing.self_weight must be in (0, 1], got {self_weight}")
    trunk = CrossStitchTrunk(encoder, len(heads), self_weight)
    return trunk, task_heads(heads, trunk.backbones[0].channels, decoder)
