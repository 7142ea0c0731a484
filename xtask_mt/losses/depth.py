"""Direct depth losses: masked L1, MSE, logL1 and smooth L1."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from xtask_mt.losses.masked import masked_mean_per_image

PixelLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DEPTH_LOSSES: dict[str, PixelLoss] = {
    "l1": lambda pred, target: (pred - target).abs(),
    "mse": lambda pred, target: (pred - target) ** 2,
    "logl1": lambda pred, target: torch.log1p((pred - target).abs()),
    "smoothl1": lambda pred, target: F.smooth_l1_loss(pred, target, reduction="none", beta=1.0),
}


def direct_depth_loss(name: str, pred: torch.Tensor, target: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """Per-image masked mean of the chosen pixel loss, then mean over the batch (fp32)."""
    if name not in DEPTH_LOSSES:
        raise ValueError(f"unknown depth loss {name!r}; choose one of {sorted(DEPTH_LOSSES)}")
    return masked_mean_per_image(DEPTH_LOSSES[name](pred.float(), target.float()), mask)
