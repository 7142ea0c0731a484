"""Learning to branch, LTB (Guo et al., ICML 2020), for dense prediction.

A tree over per-task copies of the backbone's stages: each of the five stages has one copy
per task (a node); the stem copies read the image, and node k of every later stage reads the
output of one node of the stage before, its parent, chosen by a categorical distribution
with learned logits (one row per node, 4 K^2 parameters in all). In training the choice is a
straight-through Gumbel-softmax sample (one-hot forward, the soft sample's gradient
backward) at temperature `temperature / sqrt(epoch)`, annealed as in LibMTL; in evaluation
each node takes its most likely parent, so the tree is fixed. Task k's decoder reads the
maps along its path from the root: node k of the last stage, its parent, that node's
parent, and so on (products of the choice matrices, one-hot in both modes).

The noise comes from a generator seeded by the model's own seed (drawn when it is built,
so from trainer.seed) and the number of training passes so far, both saved with the
weights: DDP processes draw the same tree, and a resumed run continues the sequence.

Every stage copy can end on any task's path, so the copies and the logits are the shared
parameters (LibMTL's choice).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xtask_mt.models.sharing import (
    LEVELS,
    DecoderFactory,
    EncoderFactory,
    last_conv_weight,
    stages,
    task_heads,
)


class LTBTrunk(nn.Module):
    """Per-task copies of each stage and the learned choice of every node's parent."""

    def __init__(self, encoder: EncoderFactory, num_tasks: int, temperature: float = 1.0
                 ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"model.sharing.temperature must be > 0, got {temperature}")
        self.copies = nn.ModuleList(encoder() for _ in range(num_tasks))
        self.logits = nn.Parameter(torch.zeros(LEVELS - 1, num_tasks, num_tasks))
        self.temperature = temperature
        self.tau = temperature
        self.seed = int(torch.randint(0, 2**31 - 1, ()))
        self.draws = 0
        self.channels: tuple[int, ...] = self.copies[0].channels * num_tasks

    def set_epoch(self, epoch: int) -> None:
        """Anneal the Gumbel-softmax temperature for training epoch `epoch` (from 1)."""
        self.tau = self.temperature / math.sqrt(max(epoch, 1))

    def get_extra_state(self) -> dict[str, Any]:
        return {"seed": self.seed, "draws": self.draws}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.seed, self.draws = int(state["seed"]), int(state["draws"])

    def shared_parameters(self) -> list[nn.Parameter]:
        """Everything: any stage copy can lie on any task's path."""
        return list(self.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [last_conv_weight(c) for c in self.copies]

    @torch.compiler.disable  # the draw count is host state: run eagerly, never recompile
    def choices(self) -> torch.Tensor:
        """(LEVELS - 1, K, K) one-hot parent choices of the nodes of stages 1..4."""
        logits = self.logits.float()
        if not self.training:
            return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
        generator = torch.Generator().manual_seed(self.seed + self.draws)
        self.draws += 1
        uniform = torch.rand(logits.shape, generator=generator).clamp_(1e-10, 1 - 1e-7)
        gumbel = (-torch.log(-torch.log(uniform))).to(logits.device)
        soft = torch.softmax((logits + gumbel) / self.tau, dim=-1)
        hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        return hard - soft.detach() + soft

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        nodes = [stages(c) for c in self.copies]
        choice = self.choices()
        outputs = [[node[0](image) for node in nodes]]
        for s in range(1, LEVELS):
            weights = choice[s - 1].to(image.dtype)
            outputs.append([node[s](_combine(outputs[-1], weights[k]))
                            for k, node in enumerate(nodes)])
        # task k's path: path[s][k, j] = 1 when node j of stage s lies on it
        path = torch.eye(len(nodes), dtype=choice.dtype, device=choice.device)
        per_level = [path]
        for s in range(LEVELS - 1, 0, -1):
            path = path @ choice[s - 1]
            per_level.insert(0, path)
        return [_combine(outputs[s], per_level[s][k].to(image.dtype))
                for k in range(len(nodes)) for s in range(LEVELS)]


def _combine(maps: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """sum_j weights[j] maps[j] (one-hot weights pick a map and keep its gradient path)."""
    out = maps[0] * weights[0]
    for j in range(1, len(maps)):
        out = out + maps[j] * weights[j]
    return out


def build_ltb(heads: Mapping[str, int], encoder: EncoderFactory, decoder: DecoderFactory,
              input_size: tuple[int, int], temperature: float = 1.0
              ) -> tuple[LTBTrunk, dict[str, nn.Module]]:
    """The trunk and a U-Net decoder per task (task -> output channels)."""
    trunk = LTBTrunk(encoder, len(heads), temperature)
    return trunk, task_heads(heads, trunk.copies[0].channels, decoder)
