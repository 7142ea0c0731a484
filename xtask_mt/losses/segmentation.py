"""Cross-entropy over labelled pixels, safe on images with no labelled pixel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xtask_mt.data.sample import IGNORE_INDEX
from xtask_mt.losses.masked import masked_mean


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the batch's pixels whose label is not IGNORE_INDEX (fp32)."""
    per_pixel = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX,
                                reduction="none", label_smoothing=label_smoothing)
    return masked_mean(per_pixel, target != IGNORE_INDEX)
