"""Surface normal losses over valid pixels (where the target vector is non-zero): the direct
losses against the ground truth and the consistency losses of a transferred normal map
against the detached direct one. Predictions are unit vectors (the head normalises them)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from xtask_mt.losses.masked import masked_mean
from xtask_mt.sample import unit_vectors

VectorLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

NORMAL_LOSSES: dict[str, VectorLoss] = {
    "cosine": lambda pred, target: 1.0 - (pred * target).sum(dim=1),
    "l1": lambda pred, target: (pred - target).abs().sum(dim=1),
}


def unit(vectors: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) vectors scaled to unit length in fp32 (zero vectors stay zero)."""
    return unit_vectors(vectors.float())


def normal_loss(name: str, pred: torch.Tensor, target: torch.Tensor,
                valid: torch.Tensor) -> torch.Tensor:
    """Mean of the chosen per-pixel loss between unit vectors over the batch's valid pixels:
    1 - cosine similarity, or the L1 distance. Zero (with graph) when no pixel is valid."""
    if name not in NORMAL_LOSSES:
        raise ValueError(f"unknown normal loss {name!r}; choose one of {sorted(NORMAL_LOSSES)}")
    return masked_mean(NORMAL_LOSSES[name](unit(pred), unit(target)), valid)
