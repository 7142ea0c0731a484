"""What the soft- and learned-sharing architectures (cross-stitch, MMoE, CGC, PLE, DSelect-k,
learning to branch) have in common.

Each of them builds several ResNet backbones (the `encoder` group) and gives every task its
own five feature maps (stem, layer1..layer4). Their trunk returns the maps of all tasks in
one list, task after task (`LEVELS` maps each, in `model.tasks` order), so that the
multi-task model, the transfer edges, MGDA-UB and KD4MTL see one list as for any other trunk;
`TaskHead` hands a task's U-Net decoder its own slice. Which of the trunk's parameters the
gradient methods treat as shared is the architecture's choice: its `shared_parameters()`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from xtask_mt.errors import UserError
from xtask_mt.models.encoder import ResNetEncoder

LEVELS = 5  # feature maps per task: stem, layer1, layer2, layer3, layer4

EncoderFactory = Callable[[], ResNetEncoder]
"""() -> a new ResNet backbone (the `encoder` group's depth and weights)"""
DecoderFactory = Callable[[tuple[int, ...], int], nn.Module]
"""(channels of a task's five maps, output channels) -> that task's decoder"""


class InputSizeError(UserError, ValueError):
    """An input of another size than the gates' linear layers were built for."""


def stages(encoder: ResNetEncoder) -> list[nn.Module]:
    """The backbone's five stages in order: stem, layer1 (with the max-pool), ..., layer4."""
    return [encoder.stem, encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4]


def last_conv_weight(encoder: ResNetEncoder) -> nn.Parameter:
    """The last convolution of layer4 (where GradNorm measures)."""
    return encoder.last_shared_parameters()[0]


def level_inputs(channels: Sequence[int], height: int, width: int) -> list[int]:
    """Numbers of values per image entering each of the five stages: the image, then each
    stage's output (stride 2 after the stem, then 4, 8, 16)."""
    return [3 * height * width] + [c * (height >> (i + 1)) * (width >> (i + 1))
                                   for i, c in enumerate(channels[:LEVELS - 1])]


class InputGate(nn.Module):
    """A linear layer over the flattened input, then a softmax over `n` choices: the gate of
    MMoE, CGC and PLE, which reads the whole input (as LibMTL gates dense prediction).
    Its weight is sized for one input shape; another is refused with one line."""

    def __init__(self, in_features: int, n: int, where: str) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, n)
        self.where = where

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(flatten_for(x, self.linear.in_features, self.where)),
                             dim=-1)


def flatten_for(x: torch.Tensor, in_features: int, where: str) -> torch.Tensor:
    """`x` as (batch, values); an input of another size raises InputSizeError."""
    if x[0].numel() != in_features:
        raise InputSizeError(
            f"{where} was built for inputs of {in_features} values per image and got "
            f"{tuple(x.shape[1:])}: the model is sized for dataset.height x dataset.width; "
            "train, resume and evaluate it at that size")
    return x.flatten(1)


def mix(maps: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """sum_e weights[:, e] * maps[e], per image: maps are E tensors (N, C, H, W), weights (N, E)."""
    w = weights.to(maps[0].dtype)
    out = maps[0] * w[:, 0].view(-1, 1, 1, 1)
    for e in range(1, len(maps)):
        out = out + maps[e] * w[:, e].view(-1, 1, 1, 1)
    return out


class TaskHead(nn.Module):
    """A task's decoder, fed the task's own `LEVELS` maps out of the trunk's list."""

    def __init__(self, decoder: nn.Module, index: int) -> None:
        super().__init__()
        self.decoder = decoder
        self.index = index

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        start = self.index * LEVELS
        if len(features) < start + LEVELS:
            raise ValueError(f"TaskHead {self.index} reads maps {start}..{start + LEVELS - 1} "
                             f"of the trunk's list, which has {len(features)}")
        return self.decoder(features[start:start + LEVELS])


def task_heads(heads: Mapping[str, int], channels: tuple[int, ...],
               decoder: DecoderFactory) -> dict[str, nn.Module]:
    """One TaskHead per task (task -> output channels), in the trunk's task order."""
    return {task: TaskHead(decoder(channels, out), i)
            for i, (task, out) in enumerate(heads.items())}


def expert_pools(encoder: EncoderFactory, num_tasks: int, shared_experts: int,
                 task_experts: int) -> tuple[nn.ModuleList, nn.ModuleList]:
    """CGC's and PLE's experts: `shared_experts` backbones for all tasks, then
    `task_experts` of each task's own (built in that order, so seeded runs match)."""
    if shared_experts < 1 or task_experts < 0:
        raise ValueError("model.sharing.shared_experts must be >= 1 and "
                         f"model.sharing.task_experts >= 0, got {shared_experts} and "
                         f"{task_experts}")
    shared = nn.ModuleList(encoder() for _ in range(shared_experts))
    specific = nn.ModuleList(nn.ModuleList(encoder() for _ in range(task_experts))
                             for _ in range(num_tasks))
    return shared, specific
