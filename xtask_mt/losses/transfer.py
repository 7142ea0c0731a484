"""Consistency losses of the transferred predictions against the detached direct ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xtask_mt.data.sample import IGNORE_INDEX
from xtask_mt.losses.masked import masked_mean, masked_mean_per_image
from xtask_mt.losses.segmentation import segmentation_loss
from xtask_mt.losses.ssim import ssim_loss_map
from xtask_mt.metrics import class_map

TDEPTH_LOSSES = ("l1", "ssim")
TSEG_LOSSES = ("cross", "kl")


def transferred_depth_loss(name: str, tdepth: torch.Tensor, depth: torch.Tensor,
                           mask: torch.Tensor) -> torch.Tensor:
    """seg->depth output against the direct depth (detached here) over valid depth pixels."""
    target = depth.detach().float()
    if name == "l1":
        per_pixel = (tdepth.float() - target).abs()
    elif name == "ssim":
        per_pixel = ssim_loss_map(tdepth, target)
    else:
        raise ValueError(f"unknown transferred depth loss {name!r}; choose one of "
                         f"{TDEPTH_LOSSES}")
    return masked_mean_per_image(per_pixel, mask)


def transferred_seg_loss(name: str, tseg: torch.Tensor, seg: torch.Tensor,
                         labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """depth->seg logits against the argmax of the direct (detached) segmentation.

    Pixels whose ground-truth label is ignored are left out. `kl` is the per-pixel KL
    divergence over the class axis from the smoothed one-hot target to the prediction.
    """
    target = class_map(seg.detach())  # argmax, faster on CPU
    target = torch.where(labels == IGNORE_INDEX, torch.full_like(target, IGNORE_INDEX), target)
    if name == "cross":
        return segmentation_loss(tseg, target, label_smoothing)
    if name != "kl":
        raise ValueError(f"unknown transferred segmentation loss {name!r}; choose one of "
                         f"{TSEG_LOSSES}")
    num_classes = tseg.shape[1]
    valid = target != IGNORE_INDEX
    one_hot = F.one_hot(target.clamp(min=0), num_classes).permute(0, 3, 1, 2).float()
    smoothed = one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes
    log_pred = F.log_softmax(tseg.float(), dim=1)
    per_pixel = (torch.xlogy(smoothed, smoothed) - smoothed * log_pred).sum(dim=1)
    return masked_mean(per_pixel, valid)
