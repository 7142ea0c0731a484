"""Composition of the four loss terms into one loss per task."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xtask_mt.losses.depth import DEPTH_LOSSES, direct_depth_loss
from xtask_mt.losses.segmentation import segmentation_loss
from xtask_mt.losses.transfer import (
    TDEPTH_LOSSES,
    TSEG_LOSSES,
    transferred_depth_loss,
    transferred_seg_loss,
)


@dataclass
class LossOutput:
    """`terms`: each loss term; `tasks`: the per-task losses the weighting combines."""

    terms: dict[str, torch.Tensor]
    tasks: dict[str, torch.Tensor]


class CrossTaskLoss:
    """seg task = (1-alpha)*seg + alpha*tdepth; depth task = (1-gamma)*depth + gamma*tseg.

    Each consistency term sits in the task loss whose decoder its gradient reaches: the
    seg->depth net is fed by the segmentation decoder, the depth->seg net by the depth decoder.
    Terms whose outputs the model does not produce (single-task or no-transfer models) are
    skipped, and their weight goes back to the direct term.
    """

    def __init__(self, depth: str = "l1", tdepth: str = "l1", tseg: str = "cross",
                 alpha: float = 0.01, gamma: float = 0.01, label_smoothing: float = 0.0) -> None:
        for key, value, choices in (("loss/depth", depth, tuple(DEPTH_LOSSES)),
                                    ("loss/tdepth", tdepth, TDEPTH_LOSSES),
                                    ("loss/tseg", tseg, TSEG_LOSSES)):
            if value not in choices:
                raise ValueError(f"{key}={value!r} is not one of {list(choices)}")
        self.depth, self.tdepth, self.tseg = depth, tdepth, tseg
        self.alpha, self.gamma, self.label_smoothing = alpha, gamma, label_smoothing

    def __call__(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
                 ) -> LossOutput:
        labels, depth, mask = batch["seg"], batch["depth"], batch["depth_mask"]
        terms: dict[str, torch.Tensor] = {}
        tasks: dict[str, torch.Tensor] = {}
        if "seg" in out:
            terms["seg"] = segmentation_loss(out["seg"], labels)
            tasks["seg"] = terms["seg"]
        if "depth" in out:
            terms["depth"] = direct_depth_loss(self.depth, out["depth"], depth, mask)
            tasks["depth"] = terms["depth"]
        if "tdepth" in out:
            terms["tdepth"] = transferred_depth_loss(self.tdepth, out["tdepth"], out["depth"],
                                                     mask)
            tasks["seg"] = (1 - self.alpha) * terms["seg"] + self.alpha * terms["tdepth"]
        if "tseg" in out:
            terms["tseg"] = transferred_seg_loss(self.tseg, out["tseg"], out["seg"], labels,
                                                 self.label_smoothing)
            tasks["depth"] = (1 - self.gamma) * terms["depth"] + self.gamma * terms["tseg"]
        return LossOutput(terms=terms, tasks=tasks)
