"""Semantic segmentation: C-class logits, cross-entropy, mIoU; a transfer net out of it sees
log-probabilities, one into it is trained towards the direct class map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xtask_mt.losses.segmentation import (
    CONSISTENCY_LOSSES,
    segmentation_loss,
    transferred_seg_loss,
)
from xtask_mt.metrics import SegmentationMetrics, class_map
from xtask_mt.sample import IGNORE_INDEX
from xtask_mt.tasks.base import Batch, ConsistencyLoss, DirectLoss, Task


class Segmentation(Task):
    name = "seg"
    sample_keys = ("seg",)
    direct_losses = ("cross",)
    consistency_losses = CONSISTENCY_LOSSES
    consistency_options = ("label_smoothing", "label_smoothing_rule")
    headline_metrics = ("miou", "pixacc")
    draw = "labels"
    title = "segmentation"
    report_rows = (("miou", "mIoU (%)", True), ("miou_legacy", "mIoU, legacy per-image (%)", True),
                   ("pixacc", "pixel accuracy (%)", True),
                   ("pixacc_legacy", "pixel accuracy, legacy per-image (%)", True))
    report_note = ("standard: one confusion matrix over the split; legacy per-image: mean of "
                   "per-image figures")
    consistency_label = ("transferred = direct class (%)", True)

    def out_channels(self, num_classes: int) -> int:
        return num_classes

    def direct_loss(self, name: str) -> DirectLoss:
        if name not in self.direct_losses:
            raise ValueError(f"unknown segmentation loss {name!r}; choose one of "
                             f"{list(self.direct_losses)}")
        return lambda pred, batch: segmentation_loss(pred, batch["seg"])

    def consistency_loss(self, name: str, **options: Any) -> ConsistencyLoss:
        if name not in self.consistency_losses:
            raise ValueError(f"unknown transferred segmentation loss {name!r}; choose one of "
                             f"{list(self.consistency_losses)}")
        smoothing = float(options.get("label_smoothing", 0.0))
        rule = str(options.get("label_smoothing_rule", "torch"))
        return lambda transferred, classes, batch: transferred_seg_loss(
            name, transferred, classes, batch["seg"], smoothing, rule)

    def metrics(self, num_classes: int, device: torch.device | str,
                edges: Sequence[str]) -> SegmentationMetrics:
        return SegmentationMetrics(num_classes, device, edges)

    @property
    def metric_directions(self) -> Mapping[str, bool]:
        return {**SegmentationMetrics.HIGHER_IS_BETTER,
                "consistency": SegmentationMetrics.CONSISTENCY_HIGHER_IS_BETTER}

    def transfer_input(self, pred: torch.Tensor) -> torch.Tensor:
        """Log-probabilities, in at least fp32 also under low-precision autocast."""
        return F.log_softmax(pred, dim=1, dtype=torch.promote_types(pred.dtype, torch.float32))

    def consistency_target(self, pred: torch.Tensor) -> torch.Tensor:
        """The class map (argmax) of the detached logits."""
        return class_map(pred.detach())

    def disagreement(self, transferred: torch.Tensor, direct: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the transferred logits at the direct class."""
        return F.cross_entropy(transferred.float(), class_map(direct), reduction="none")

    def energy_term(self, transferred: torch.Tensor, direct: torch.Tensor) -> torch.Tensor:
        """KL(softmax(direct) || softmax(transferred)), summed over the classes."""
        log_direct = F.log_softmax(direct.double(), dim=1)
        log_transferred = F.log_softmax(transferred.double(), dim=1)
        return (log_direct.exp() * (log_direct - log_transferred)).sum(dim=1)

    def image_errors(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """1 - pixel accuracy over each image's labelled pixels."""
        labels = batch["seg"]
        labelled = labels != IGNORE_INDEX
        right = (class_map(pred) == labels) & labelled
        counts = labelled.sum(dim=(1, 2)).double()
        return 1 - right.sum(dim=(1, 2)).double() / counts.where(counts > 0, float("nan"))

    def prediction_map(self, pred: torch.Tensor) -> np.ndarray:
        return class_map(pred, torch.int16).cpu().numpy()

    def truth_map(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        labels = batch["seg"].cpu().numpy()
        return labels, labels != IGNORE_INDEX
