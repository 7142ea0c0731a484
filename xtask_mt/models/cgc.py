"""Customised gate control, CGC (Tang et al., RecSys 2020), for dense prediction.

Experts are whole ResNet backbones: `shared_experts` serve every task and each task has
`task_experts` of its own. Task k's gate, a linear layer over the flattened image followed by
a softmax (as LibMTL gates dense prediction), mixes the shared experts' maps and task k's
own, per image, at each of the five stages; task k's decoder reads that mixture. CGC is one
gating level; PLE (models/ple.py) stacks one per stage.

The shared experts are the shared parameters (LibMTL's choice); each task's experts and gate
get that task's gradient only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from xtask_mt.models.sharing import (
    LEVELS,
    DecoderFactory,
    EncoderFactory,
    InputGate,
    expert_pools,
    last_conv_weight,
    mix,
    task_heads,
)


class CGCTrunk(nn.Module):
    """Shared experts, each task's own experts, and a gate per task over both."""

    def __init__(self, encoder: EncoderFactory, num_tasks: int, shared_experts: int,
                 task_experts: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.shared, self.specific = expert_pools(encoder, num_tasks, shared_experts,
                                                  task_experts)
        values = 3 * input_size[0] * input_size[1]
        self.gates = nn.ModuleList(InputGate(values, shared_experts + task_experts,
                                             f"CGC gate {k}") for k in range(num_tasks))
        self.channels: tuple[int, ...] = self.shared[0].channels * num_tasks

    def shared_parameters(self) -> list[nn.Parameter]:
        """The shared experts."""
        return list(self.shared.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [last_conv_weight(e) for e in self.shared]

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        shared_maps = [e(image) for e in self.shared]
        out = []
        for own, gate in zip(self.specific, self.gates, strict=True):
            expert_maps = shared_maps + [e(image) for e in own]
            weights = gate(image)
            out += [mix([maps[s] for maps in expert_maps], weights) for s in range(LEVELS)]
        return out


def build_cgc(heads: Mapping[str, int], encoder: EncoderFactory, decoder: DecoderFactory,
              input_size: tuple[int, int], shared_experts: int = 1, task_experts: int = 1
              ) -> tuple[CGCTrunk, dict[str, nn.Module]]:
    """The trunk and a U-Net decoder per task (task -> output channels)."""
    trunk = CGCTrunk(encoder, len(heads), shared_experts, task_experts, input_size)
    return trunk, task_heads(heads, trunk.shared[0].channels, decoder)
