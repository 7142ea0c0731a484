"""Segmentation losses: cross-entropy against the labels, and the consistency losses of a
transferred segmentation against the direct one's class map. Safe on images with no
labelled pixel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xtask_mt.losses.masked import masked_mean
from xtask_mt.sample import IGNORE_INDEX

CONSISTENCY_LOSSES = ("cross", "kl")
SMOOTHING_RULES = ("torch", "seed")


def smoothed_weights(smoothing: float, num_classes: int, rule: str) -> tuple[float, float]:
    """(weight of the labelled class, weight of each other class) in a smoothed one-hot
    target: torch's rule gives 1 - s + s/C and s/C, the seed's 1 - s and s/(C - 1)."""
    if rule == "torch":
        return 1.0 - smoothing + smoothing / num_classes, smoothing / num_classes
    if rule == "seed":
        return 1.0 - smoothing, smoothing / (num_classes - 1)
    raise ValueError(f"unknown label smoothing rule {rule!r}; choose one of {SMOOTHING_RULES}")


def _smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, on: float,
                            off: float) -> torch.Tensor:
    """Mean cross-entropy to the target with `on` at the label and `off` elsewhere, over
    the pixels whose label is not IGNORE_INDEX (fp32)."""
    valid = target != IGNORE_INDEX
    log_pred = F.log_softmax(logits.float(), dim=1)
    at_label = log_pred.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1)
    per_pixel = -(on - off) * at_label - off * log_pred.sum(dim=1)
    return masked_mean(per_pixel, valid)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the batch's pixels whose label is not IGNORE_INDEX (fp32)."""
    per_pixel = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX,
                                reduction="none", label_smoothing=label_smoothing)
    return masked_mean(per_pixel, target != IGNORE_INDEX)


def transferred_seg_loss(name: str, transferred: torch.Tensor, classes: torch.Tensor,
                         labels: torch.Tensor, label_smoothing: float = 0.0,
                         rule: str = "torch") -> torch.Tensor:
    """Transferred logits against `classes`, the direct segmentation's (detached) class map,
    smoothed by `label_smoothing` under `rule` (see smoothed_weights).

    Pixels whose ground-truth label is ignored are left out. `kl` is the per-pixel KL
    divergence over the class axis from the smoothed one-hot target to the prediction.
    """
    target = torch.where(labels == IGNORE_INDEX, torch.full_like(classes, IGNORE_INDEX), classes)
    num_classes = transferred.shape[1]
    on, off = smoothed_weights(label_smoothing, num_classes, rule)
    if name == "cross":
        if rule == "torch" or label_smoothing == 0:
            return segmentation_loss(transferred, target, label_smoothing)
        return _smoothed_cross_entropy(transferred, target, on, off)
    if name != "kl":
        raise ValueError(f"unknown transferred segmentation loss {name!r}; choose one of "
                         f"{CONSISTENCY_LOSSES}")
    valid = target != IGNORE_INDEX
    one_hot = F.one_hot(target.clamp(min=0), num_classes).permute(0, 3, 1, 2).float()
    smoothed = one_hot * (on - off) + off
    log_pred = F.log_softmax(transferred.float(), dim=1)
    per_pixel = (torch.xlogy(smoothed, smoothed) - smoothed * log_pred).sum(dim=1)
    return masked_mean(per_pixel, valid)
