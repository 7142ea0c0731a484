"""DSelect-k (Hazimeh et al., NeurIPS 2021): sparse, differentiable selection of k experts
per task, for dense prediction.

`num_experts` (a power of 2) whole ResNet backbones are the experts. Each task has `k`
single-expert selectors; selector i holds log2(num_experts) binary logits z_i, passed
through the smooth-step function S (cubic on [-gamma/2, gamma/2], exactly 0 below and 1
above), and puts weight prod_b (S(z_ib) if bit b of e is 1 else 1 - S(z_ib)) on expert e:
once every S is 0 or 1 it selects one expert exactly, with a gradient before that. The task's
expert weights are sum_i softmax(w)_i x selector i, so at most k experts are nonzero at
convergence. z and w come from linear layers over the flattened image (the per-example gate,
as LibMTL gates dense prediction), initialised uniform in +-gamma/100 and +-0.05 as in the
reference. The expert weights mix the experts' maps, per image, at each of the five stages.
The reference's optional entropy regulariser is not applied.

The experts are the shared parameters (LibMTL's choice); each task's selectors get that
task's gradient only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from xtask_mt.models.mmoe import MMoETrunk
from xtask_mt.models.sharing import (
    DecoderFactory,
    EncoderFactory,
    flatten_for,
    task_heads,
)


def smooth_step(t: torch.Tensor, gamma: float) -> torch.Tensor:
    """0 for t <= -gamma/2, 1 for t >= gamma/2, -2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2 between."""
    cubic = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return torch.where(t <= -gamma / 2, torch.zeros_like(t),
                       torch.where(t >= gamma / 2, torch.ones_like(t), cubic))


class DSelectGate(nn.Module):
    """One task's k selectors over `num_experts` experts, read from the flattened image."""

    def __init__(self, in_features: int, num_experts: int, k: int, gamma: float,
                 where: str) -> None:
        super().__init__()
        self.bits = int(math.log2(num_experts))
        self.k, self.gamma, self.where = k, gamma, where
        self.z_logits = nn.Linear(in_features, k * self.bits)
        self.w_logits = nn.Linear(in_features, k)
        nn.init.uniform_(self.z_logits.weight, -gamma / 100, gamma / 100)
        nn.init.uniform_(self.z_logits.bias, -gamma / 100, gamma / 100)
        nn.init.uniform_(self.w_logits.weight, -0.05, 0.05)
        nn.init.uniform_(self.w_logits.bias, -0.05, 0.05)
        codes = [[(e >> (self.bits - 1 - b)) & 1 for b in range(self.bits)]
                 for e in range(num_experts)]
        self.register_buffer("codes", torch.tensor(codes, dtype=torch.bool), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(N, num_experts) expert weights, each row summing to 1."""
        x = flatten_for(image, self.z_logits.in_features, self.where)
        s = smooth_step(self.z_logits(x).float().view(-1, self.k, 1, self.bits), self.gamma)
        selectors = torch.where(self.codes, s, 1 - s).prod(dim=-1)  # (N, k, experts)
        w = torch.softmax(self.w_logits(x).float(), dim=-1)
        return torch.einsum("nk,nke->ne", w, selectors)


class DSelectKTrunk(MMoETrunk):
    """Experts shared by all tasks and a DSelect-k gate per task: MMoE's trunk with its
    softmax gates replaced."""

    def __init__(self, encoder: EncoderFactory, num_tasks: int, num_experts: int, k: int,
                 gamma: float, input_size: tuple[int, int]) -> None:
        if num_experts < 2 or num_experts & (num_experts - 1):
            raise ValueError("model.sharing.num_experts must be a power of 2 (2, 4, 8, ...) "
                             f"for DSelect-k's binary codes, got {num_experts}")
        if not 1 <= k <= num_experts or gamma <= 0:
            raise ValueError(f"model.sharing.k must be in [1, num_experts={num_experts}] and "
                             f"model.sharing.gamma > 0, got k={k}, gamma={gamma}")

        def gate(values: int, experts: int, task: int) -> nn.Module:
            return DSelectGate(values, experts, k, gamma, f"DSelect-k gate {task}")

        super().__init__(encoder, num_tasks, num_experts, input_size, gate)


def build_dselect_k(heads: Mapping[str, int], encoder: EncoderFactory, decoder: DecoderFactory,
                    input_size: tuple[int, int], num_experts: int = 4, k: int = 2,
                    gamma: float = 1.0) -> tuple[DSelectKTrunk, dict[str, nn.Module]]:
    """The trunk and a U-Net decoder per task (task -> output channels)."""
    trunk = DSelectKTrunk(encoder, len(heads), num_experts, k, gamma, input_size)
    return trunk, task_heads(heads, trunk.experts[0].channels, decoder)
