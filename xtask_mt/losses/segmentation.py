"""Segmentation losses: cross-entropy against the labels, and the consistency losses of a
transferred segmentation against the direct one's class map. Safe on images with no
labelled pixel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xtask_mt.losses.masked import masked_mean
from xtask_mt.sample import IGNORE_INDEX

CONSISTENCY_LOSSES = ("cross", "kl")


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the batch's pixels whose label is not IGNORE_INDEX (fp32)."""
    per_pixel = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX,
                                reduction="none", label_smoothing=label_smoothing)
    return masked_mean(per_pixel, target != IGNORE_INDEX)


def transferred_seg_loss(name: str, transferred: torch.Tensor, classes: torch.Tensor,
                         labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Transferred logits against `classes`, the direct segmentation's (detached) class map.

    Pixels whose ground-truth label is ignored are left out. `kl` is the per-pixel KL
    divergence over the class axis from the smoothed one-hot target to the prediction.
    """
    target = torch.where(labels == IGNORE_INDEX, torch.full_like(classes, IGNORE_INDEX), classes)
    if name == "cross":
        return segmentation_loss(transferred, target, label_smoothing)
    if name != "kl":
        raise ValueError(f"unknown transferred segmentation loss {name!r}; choose one of "
                         f"{CONSISTENCY_LOSSES}")
    num_classes = transferred.shape[1]
    valid = target != IGNORE_INDEX
    one_hot = F.one_hot(target.clamp(min=0), num_classes).permute(0, 3, 1, 2).float()
    smoothed = one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes
    log_pred = F.log_softmax(transferred.float(), dim=1)
    per_pixel = (torch.xlogy(smoothed, smoothed) - smoothed * log_pred).sum(dim=1)
    return masked_mean(per_pixel, valid)
