"""Depth losses over valid pixels: the direct losses against the ground truth (L1, MSE,
logL1, smooth L1) and the consistency losses of a transferred depth against the detached
direct one (L1, SSIM)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from xtask_mt.losses.masked import masked_mean_per_image
from xtask_mt.losses.ssim import ssim_loss_map

PixelLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DEPTH_LOSSES: dict[str, PixelLoss] = {
    "l1": lambda pred, target: (pred - target).abs(),
    "mse": lambda pred, target: (pred - target) ** 2,
    "logl1": lambda pred, target: torch.log1p((pred - target).abs()),
    "smoothl1": lambda pred, target: F.smooth_l1_loss(pred, target, reduction="none", beta=1.0),
}
CONSISTENCY_LOSSES: dict[str, PixelLoss] = {
    "l1": lambda pred, target: (pred - target).abs(),
    "ssim": ssim_loss_map,
}


def direct_depth_loss(name: str, pred: torch.Tensor, target: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """Per-image masked mean of the chosen pixel loss, then mean over the batch (fp32)."""
    if name not in DEPTH_LOSSES:
        raise ValueError(f"unknown depth loss {name!r}; choose one of {sorted(DEPTH_LOSSES)}")
    return masked_mean_per_image(DEPTH_LOSSES[name](pred.float(), target.float()), mask)


def transferred_depth_loss(name: str, transferred: torch.Tensor, direct: torch.Tensor,
                           mask: torch.Tensor) -> torch.Tensor:
    """A transferred depth against the direct depth (detached by the caller) over valid
    depth pixels: per-image masked mean, then mean over the batch (fp32)."""
    if name not in CONSISTENCY_LOSSES:
        raise ValueError(f"unknown transferred depth loss {name!r}; choose one of "
                         f"{sorted(CONSISTENCY_LOSSES)}")
    return masked_mean_per_image(CONSISTENCY_LOSSES[name](transferred.float(), direct.float()),
                                 mask)
