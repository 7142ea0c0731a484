"""Single-task networks side by side in one model: each task's own trunk and head, nothing
shared. Trained with equal fixed weights, the sum of the task losses gives every network
exactly its own task's gradient, so one job trains the K single-task baselines of a
benchmark (on the same batches) instead of K jobs."""

from __future__ import annotations

import torch
from torch import nn


class SeparateTrunks(nn.Module):
    """The trunks of the tasks' own networks; `forward` returns their feature lists one after
    another (task order), `spans[task]` where each task's list lies in it."""

    def __init__(self, trunks: dict[str, nn.Module]) -> None:
        super().__init__()
        self.trunks = nn.ModuleDict(trunks)
        self.spans: dict[str, tuple[int, int]] = {}
        channels: list[int] = []
        for task, trunk in trunks.items():
            self.spans[task] = (len(channels), len(channels) + len(trunk.channels))
            channels += trunk.channels
        self.channels = tuple(channels)

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """Nothing is shared: each trunk's own last layer (for GradNorm's measurement)."""
        return [p for trunk in self.trunks.values() for p in trunk.last_shared_parameters()]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [feature for trunk in self.trunks.values() for feature in trunk(x)]


class OwnTrunkHead(nn.Module):
    """A task's head reading only its own trunk's slice of the feature list."""

    def __init__(self, head: nn.Module, span: tuple[int, int]) -> None:
        super().__init__()
        self.head, self.span = head, span

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(features[self.span[0]:self.span[1]])


def separate_networks(networks: dict[str, tuple[nn.Module, nn.Module]]
                      ) -> tuple[SeparateTrunks, dict[str, OwnTrunkHead]]:
    """(trunk, head) per task -> one trunk module and a head per task for CrossTaskModel."""
    trunk = SeparateTrunks({task: net[0] for task, net in networks.items()})
    return trunk, {task: OwnTrunkHead(net[1], trunk.spans[task])
                   for task, net in networks.items()}
