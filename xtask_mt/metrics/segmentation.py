"""Segmentation metrics accumulated over an evaluation set.

mIoU and pixel accuracy come from one confusion matrix over the whole set (the standard),
plus the legacy per-image figures (IoU averaged over the classes present in each image, then
over images) for comparison with older papers. Consistency: the share of labelled pixels
where a transferred prediction scores the direct prediction's class highest. Everything is
tensor ops that stay on the device (bincount for the confusion matrices).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from xtask_mt.metrics.collection import MetricCollection
from xtask_mt.metrics.sums import NamedSums
from xtask_mt.sample import IGNORE_INDEX


def class_map(logits: torch.Tensor, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """(N, C, H, W) scores -> (N, H, W) class ids of `dtype`: the first index of the maximum,
    as argmax() gives it. Built from amax() and one comparison, which on CPU is several times
    faster than max().indices or argmax() over the strided class axis. A pixel whose scores
    hold a NaN gets class C-1."""
    num_classes = logits.shape[1]
    # The class-axis reductions run over NCHW planes; a channels-last map (as a channels-last
    # model gives) is cheaper to copy once than to reduce along its innermost axis on CPU.
    logits = logits.contiguous()
    top = logits.amax(dim=1, keepdim=True)
    # Class c scores num_classes - c where it reaches the maximum, so the largest score is
    # that of the first maximal class.
    score_dtype = torch.uint8 if num_classes < 256 else torch.int32
    score = torch.arange(num_classes, 0, -1, dtype=score_dtype, device=logits.device)
    reaches_top = (logits == top).view(torch.uint8) if score_dtype == torch.uint8 else \
        (logits == top).to(score_dtype)
    first = reaches_top.mul_(score.view(1, -1, 1, 1)).amax(dim=1)
    return (num_classes - first.to(dtype)).clamp_(max=num_classes - 1)


def _index_dtype(bins: int) -> torch.dtype:
    """The narrowest integer type for bincount indices below `bins`: bincount over int16 is
    several times faster on CPU than over int64."""
    if bins <= torch.iinfo(torch.int16).max:
        return torch.int16
    return torch.int32 if bins <= torch.iinfo(torch.int32).max else torch.int64


def per_image_confusion(pred: torch.Tensor, target: torch.Tensor,
                        num_classes: int) -> torch.Tensor:
    """(N, C, C) confusion matrix of each image of a batch, from one bincount."""
    n = pred.shape[0]
    bins = n * num_classes**2
    dtype = _index_dtype(bins + 1)
    image_id = torch.arange(n, device=pred.device, dtype=dtype).view(n, *([1] * (pred.dim() - 1)))
    index = (image_id * num_classes + target.to(dtype)) * num_classes + pred.to(dtype)
    # ignored pixels go to one extra bin, dropped
    index = torch.where(target == IGNORE_INDEX, bins, index)
    counts = torch.bincount(index.flatten(), minlength=bins + 1)[:bins]
    return counts.reshape(n, num_classes, num_classes)


def iou_from_confusion(conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class IoU and whether the class occurs (in ground truth or prediction).

    Works on (C, C) or batched (..., C, C) matrices.
    """
    conf = conf.double()
    tp = conf.diagonal(dim1=-2, dim2=-1)
    union = conf.sum(-1) + conf.sum(-2) - tp
    present = union > 0
    return tp / union.clamp(min=1), present


def _check_labels(target: torch.Tensor, num_classes: int) -> None:
    """A label outside 0..C-1 that is not the ignore index would be counted in another
    image's or class's bin: refuse it, saying what to check."""
    lo, hi = (int(v) for v in torch.aminmax(target))
    if hi < num_classes and lo >= min(0, IGNORE_INDEX):  # IGNORE_INDEX is -1, next to 0
        return
    bad = int(((target >= num_classes) | ((target < 0) & (target != IGNORE_INDEX))).sum())
    if bad:
        raise ValueError(
            f"{bad} segmentation label(s) outside 0..{num_classes - 1} (and not the ignore "
            f"index {IGNORE_INDEX}) for a model with {num_classes} classes: check "
            "dataset.num_classes and the label mapping of the dataset.")


class SegmentationMetrics:
    """Confusion matrix, legacy per-image sums and, per incoming edge, the agreement of the
    transferred prediction with the direct one."""

    HIGHER_IS_BETTER = {"miou": True, "pixacc": True, "miou_legacy": True,
                        "pixacc_legacy": True}
    CONSISTENCY_HIGHER_IS_BETTER = True  # consistency_<edge>: share of agreeing pixels

    def __init__(self, num_classes: int, device: torch.device | str = "cpu",
                 edges: Sequence[str] = ()) -> None:
        self.num_classes = num_classes
        self.edges = tuple(edges)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        names = ["image_miou", "image_pixacc", "images"]
        for edge in self.edges:
            names += [f"agree_{edge}", f"pixels_{edge}"]
        self.sums = NamedSums(names, device)

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.confusion, self.sums.values]

    @torch.no_grad()
    def update(self, pred: torch.Tensor, batch: Mapping[str, torch.Tensor],
               transferred: Mapping[str, torch.Tensor]) -> None:
        target = batch["seg"]
        _check_labels(target, self.num_classes)
        ids = _index_dtype(pred.shape[0] * self.num_classes**2 + 1)  # what bincount indexes
        classes = class_map(pred, ids)
        per_image = per_image_confusion(classes, target, self.num_classes)
        self._add_images(per_image)
        if not transferred:
            return
        labelled = target != IGNORE_INDEX
        at_direct = classes.long().unsqueeze(1)
        for edge, scores in transferred.items():
            scores = scores.contiguous()  # as in class_map
            # the direct class scores highest (a tie counts): one gather, not a class map
            top = scores.gather(1, at_direct) == scores.amax(dim=1, keepdim=True)
            self.sums.add(f"agree_{edge}", top.squeeze(1).logical_and_(labelled).count_nonzero())
            self.sums.add(f"pixels_{edge}", per_image.sum())

    def _add_images(self, per_image: torch.Tensor) -> None:
        self.confusion += per_image.sum(dim=0)
        labelled = per_image.sum(dim=(1, 2))
        has_pixels = labelled > 0
        iou, present = iou_from_confusion(per_image)
        n_present = present.sum(dim=1).clamp(min=1)
        image_miou = (iou * present).sum(dim=1) / n_present
        image_acc = per_image.diagonal(dim1=1, dim2=2).sum(dim=1).double() / labelled.clamp(
            min=1)
        self.sums.add("image_miou", image_miou[has_pixels].sum())
        self.sums.add("image_pixacc", image_acc[has_pixels].sum())
        self.sums.add("images", has_pixels.sum())

    def per_class_iou(self) -> list[float]:
        """IoU of each class over the whole set (NaN for classes never seen nor predicted)."""
        iou, present = iou_from_confusion(self.confusion)
        return torch.where(present, iou, torch.full_like(iou, float("nan"))).tolist()

    def compute(self) -> dict[str, float]:
        result: dict[str, float] = {}
        conf = self.confusion.double()
        if conf.sum() > 0:
            iou, present = iou_from_confusion(conf)
            result["miou"] = float((iou * present).sum() / present.sum().clamp(min=1))
            result["pixacc"] = float(conf.diagonal().sum() / conf.sum())
        images = self.sums["images"]
        if images > 0:
            result["miou_legacy"] = float(self.sums["image_miou"] / images)
            result["pixacc_legacy"] = float(self.sums["image_pixacc"] / images)
        for edge in self.edges:
            pixels = self.sums[f"pixels_{edge}"]
            if pixels > 0:
                result[f"consistency_{edge}"] = float(self.sums[f"agree_{edge}"] / pixels)
        return result


def segmentation_iou(metrics: MetricCollection) -> list[float] | None:
    """Per-class IoU of the segmentation accumulator in `metrics` (None when the model has
    no segmentation task), for trackers and evaluation files."""
    for accumulator in metrics.tasks.values():
        if isinstance(accumulator, SegmentationMetrics):
            return accumulator.per_class_iou()
    return None


def none_for_nan(iou: Sequence[float | None]) -> list[float | None]:
    """Per-class IoU as JSON files and W&B tables hold it: None for a class never seen nor
    predicted (NaN), which neither writes as a number."""
    return [None if v is None or math.isnan(v) else float(v) for v in iou]
