"""Multi-gate mixture of experts, MMoE (Ma et al., KDD 2018), for dense prediction.

`num_experts` whole ResNet backbones (the experts) read the image; each task has a gate, a
linear layer over the flattened image followed by a softmax over the experts (as LibMTL
gates dense prediction), whose weights mix the experts' maps, per image, at each of the five
stages. Task k's decoder reads its mixture.

The experts are the shared parameters (LibMTL's choice); each gate serves one task and gets
that task's gradient only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from xtask_mt.models.sharing import (
    LEVELS,
    DecoderFactory,
    EncoderFactory,
    InputGate,
    last_conv_weight,
    mix,
    task_heads,
)

# (flattened input size, number of experts, task index) -> that task's gate over the experts
GateFactory = Callable[[int, int, int], nn.Module]


def _softmax_gate(values: int, num_experts: int, task: int) -> nn.Module:
    return InputGate(values, num_experts, f"MMoE gate {task}")


class MMoETrunk(nn.Module):
    """Experts shared by all tasks and a gate per task, both reading the image: MMoE's softmax
    gate by default, or another `gate` (DSelect-k's) over the same experts."""

    def __init__(self, encoder: EncoderFactory, num_tasks: int, num_experts: int,
                 input_size: tuple[int, int], gate: GateFactory = _softmax_gate) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"model.sharing.num_experts must be >= 1, got {num_experts}")
        self.experts = nn.ModuleList(encoder() for _ in range(num_experts))
        values = 3 * input_size[0] * input_size[1]
        self.gates = nn.ModuleList(gate(values, num_experts, k) for k in range(num_tasks))
        self.channels: tuple[int, ...] = self.experts[0].channels * num_tasks

    def shared_parameters(self) -> list[nn.Parameter]:
        """The experts."""
        return list(self.experts.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [last_conv_weight(e) for e in self.experts]

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        expert_maps = [e(image) for e in self.experts]
        out = []
        for gate in self.gates:
            weights = gate(image)
            out += [mix([maps[s] for maps in expert_maps], weights) for s in range(LEVELS)]
        return out


def build_mmoe(heads: Mapping[str, int], encoder: EncoderFactory, decoder: DecoderFactory,
               input_size: tuple[int, int], num_experts: int = 3
               ) -> tuple[MMoETrunk, dict[str, nn.Module]]:
    """The trunk and a U-Net decoder per task (task -> output channels)."""
    trunk = MMoETrunk(encoder, len(heads), num_experts, input_size)
    return trunk, task_heads(heads, trunk.experts[0].channels, decoder)
