"""Progressive layered extraction, PLE (Tang et al., RecSys 2020), for dense prediction.

CGC (models/cgc.py) stacked once per backbone stage: the experts are ResNet backbones cut at
their five stages, `shared_experts` shared by every task and `task_experts` per task. At each
stage, each task's experts read that task's input of the stage, the shared experts read the
shared input, and
- task k's gate (a linear layer over its flattened stage input, then a softmax, as LibMTL
  gates dense prediction) mixes the shared experts' and task k's own outputs, per image: task
  k's map of this stage, which its decoder reads and its experts' next stage takes;
- the shared gate (below the last stage) mixes the outputs of all experts into the shared
  experts' next input, as in the paper.

The shared experts and the shared gates are the shared parameters (LibMTL counts the
shared experts; the shared gates are trained by every task as well); each task's experts and
gates get that task's gradient only.
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
    level_inputs,
    mix,
    stages,
    task_heads,
)


class PLETrunk(nn.Module):
    """Shared and task-specific experts, gated after every stage."""

    def __init__(self, encoder: EncoderFactory, num_tasks: int, shared_experts: int,
                 task_experts: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.shared, self.specific = expert_pools(encoder, num_tasks, shared_experts,
                                                  task_experts)
        sizes = level_inputs(self.shared[0].channels, *input_size)
        n_task, n_all = shared_experts + task_experts, shared_experts + num_tasks * task_experts
        self.task_gates = nn.ModuleList(
            nn.ModuleList(InputGate(sizes[s], n_task, f"PLE gate of task {k} at stage {s}")
                          for s in range(LEVELS)) for k in range(num_tasks))
        self.shared_gates = nn.ModuleList(
            InputGate(sizes[s], n_all, f"PLE shared gate at stage {s}")
            for s in range(LEVELS - 1))
        self.channels: tuple[int, ...] = self.shared[0].channels * num_tasks

    def shared_parameters(self) -> list[nn.Parameter]:
        """The shared experts and the shared gates."""
        return [*self.shared.parameters(), *self.shared_gates.parameters()]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [last_conv_weight(e) for e in self.shared]

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        shared = [stages(e) for e in self.shared]
        specific = [[stages(e) for e in own] for own in self.specific]
        shared_in, task_in = image, [image] * len(specific)
        out: list[list[torch.Tensor]] = [[] for _ in specific]
        for s in range(LEVELS):
            shared_out = [expert[s](shared_in) for expert in shared]
            own_out = [[expert[s](x) for expert in own] for own, x in zip(specific, task_in,
                                                                          strict=True)]
            task_in = [mix(shared_out + own_out[k], self.task_gates[k][s](x))
                       for k, x in enumerate(task_in)]
            for k, x in enumerate(task_in):
                out[k].append(x)
            if s < LEVELS - 1:
                every = shared_out + [x for maps in own_out for x in maps]
                shared_in = mix(every, self.shared_gates[s](shared_in))
        return [x for task_maps in out for x in task_maps]


def build_ple(heads: Mapping[str, int], encoder: EncoderFactory, decoder: DecoderFactory,
              input_size: tuple[int, int], shared_experts: int = 1, task_experts: int = 1
              ) -> tuple[PLETrunk, dict[str, nn.Module]]:
    """The trunk and a U-Net decoder per task (task -> output channels)."""
    trunk = PLETrunk(encoder, len(heads), shared_experts, task_experts, input_size)
    return trunk, task_heads(heads, trunk.shared[0].channels, decoder)
