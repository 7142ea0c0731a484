"""Evaluation metrics accumulated as sums over batches.

Segmentation: mIoU and pixel accuracy from one confusion matrix over the whole evaluation
set (the standard), plus the legacy per-image figures (IoU averaged over the classes present
in each image, then over images) for comparison with older papers. Depth: errors over valid
pixels, in the target's own unit. Consistency: how far the transferred predictions are from
the direct ones. The per-pixel work runs as tensor ops on the device (bincount for the
confusion matrices), or on CPU in the fused kernels of `metric_kernels`.
"""

from __future__ import annotations

import torch

from xtask_mt import metric_kernels
from xtask_mt.data.sample import IGNORE_INDEX

DELTA_THRESHOLDS = (1.25, 1.25**2, 1.25**3)
_DEPTH_EPS = 1e-6


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


def torch_seg_sums(seg: torch.Tensor, target: torch.Tensor, tseg: torch.Tensor | None,
                   num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image confusion matrices and the labelled pixels whose direct class scores highest
    (a tie counts) in the transferred logits, as tensor ops that stay on the device."""
    ids = _index_dtype(seg.shape[0] * num_classes**2 + 1)  # the type bincount indexes with
    pred = class_map(seg, ids)
    per_image = per_image_confusion(pred, target, num_classes)
    if tseg is None:
        return per_image, torch.zeros((), dtype=torch.int64, device=seg.device)
    tseg = tseg.contiguous()  # as in class_map
    at_direct = tseg.gather(1, pred.long().unsqueeze(1))  # one gather, not a second class map
    agree = (at_direct == tseg.amax(dim=1, keepdim=True)).squeeze(1)
    return per_image, agree.logical_and_(target != IGNORE_INDEX).count_nonzero()


def torch_depth_sums(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     tdepth: torch.Tensor | None) -> torch.Tensor:
    """[abs, abs rel, squared, delta1-3, valid pixels, |tdepth - depth|] over valid pixels,
    float64 per pixel. Masks multiply instead of indexing, so no step waits for the host to
    learn how many pixels are valid; invalid pixels get target 1 and zero error, and a ratio
    above every threshold."""
    sums = torch.zeros(8, dtype=torch.float64, device=pred.device)
    p = pred.double().flatten()
    valid = mask.flatten()
    t = torch.where(valid, target.double().flatten(), 1.0)
    err = (p - t).abs_().mul_(valid)
    quotient = p.clamp(min=_DEPTH_EPS).div_(t)
    ratio = torch.maximum(quotient, quotient.reciprocal())
    ratio.masked_fill_(~valid, float("inf"))
    sums[0] = err.sum()
    sums[1] = torch.dot(err, t.reciprocal_())
    sums[2] = torch.dot(err, err)
    for k, threshold in enumerate(DELTA_THRESHOLDS):
        sums[3 + k] = torch.count_nonzero(ratio < threshold)
    sums[6] = valid.count_nonzero()
    if tdepth is not None:
        sums[7] = (tdepth.double().flatten() - p).abs_().mul_(valid).sum()
    return sums


class MultiTaskMetrics:
    """Accumulates metric sums over batches; compute() turns them into figures.

    On CPU the per-pixel work runs in the fused kernels of `metric_kernels` (several times
    faster than tensor ops there); elsewhere, and with `fused=False`, in tensor ops.
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu",
                 fused: bool | None = None) -> None:
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.fused = self.device.type == "cpu" if fused is None else fused
        if self.fused and self.device.type != "cpu":
            raise ValueError(f"The fused metric kernels run on CPU only, not {self.device}.")
        self.reset()

    def reset(self) -> None:
        dev = self.device
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64,
                                     device=dev)
        # legacy: [sum of per-image mIoU, sum of per-image pixel acc, images counted]
        self.legacy = torch.zeros(3, dtype=torch.float64, device=dev)
        # depth: [abs, abs rel, squared, delta1, delta2, delta3, valid pixel count]
        self.depth = torch.zeros(7, dtype=torch.float64, device=dev)
        # consistency: [|tdepth - depth| sum, depth pixels, seg agreement, seg pixels]
        self.consistency = torch.zeros(4, dtype=torch.float64, device=dev)

    def state_tensors(self) -> list[torch.Tensor]:
        """The accumulated sums; summing these across processes gives the global metrics."""
        return [self.confusion, self.legacy, self.depth, self.consistency]

    @torch.no_grad()
    def update(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> None:
        """Add one batch."""
        if "seg" in out:
            tseg = out.get("tseg")
            if self.fused:
                per_image, agreed = metric_kernels.seg_sums(out["seg"], batch["seg"], tseg)
            else:
                per_image, agreed = torch_seg_sums(out["seg"], batch["seg"], tseg,
                                                   self.num_classes)
            self._add_seg(per_image)
            if tseg is not None:
                self.consistency[2] += agreed
                self.consistency[3] += per_image.sum()
        if "depth" in out:
            args = (out["depth"], batch["depth"], batch["depth_mask"], out.get("tdepth"))
            sums = metric_kernels.depth_sums(*args, _DEPTH_EPS, DELTA_THRESHOLDS) if self.fused \
                else torch_depth_sums(*args)
            self.depth += sums[:7]
            if "tdepth" in out:
                self.consistency[0] += sums[7]
                self.consistency[1] += sums[6]

    def _add_seg(self, per_image: torch.Tensor) -> None:
        self.confusion += per_image.sum(dim=0)
        labelled = per_image.sum(dim=(1, 2))
        has_pixels = labelled > 0
        iou, present = iou_from_confusion(per_image)
        n_present = present.sum(dim=1).clamp(min=1)
        image_miou = (iou * present).sum(dim=1) / n_present
        image_acc = per_image.diagonal(dim1=1, dim2=2).sum(dim=1).double() / labelled.clamp(
            min=1)
        self.legacy[0] += image_miou[has_pixels].sum()
        self.legacy[1] += image_acc[has_pixels].sum()
        self.legacy[2] += has_pixels.sum()

    def per_class_iou(self) -> list[float]:
        """IoU of each class over the whole set (NaN for classes never seen nor predicted)."""
        iou, present = iou_from_confusion(self.confusion)
        return torch.where(present, iou, torch.full_like(iou, float("nan"))).tolist()

    def compute(self) -> dict[str, float]:
        """Figures keyed without prefix: miou, pixacc, miou_legacy, ..., consistency_*."""
        result: dict[str, float] = {}
        conf = self.confusion.double()
        if conf.sum() > 0:
            iou, present = iou_from_confusion(conf)
            result["miou"] = float((iou * present).sum() / present.sum().clamp(min=1))
            result["pixacc"] = float(conf.diagonal().sum() / conf.sum())
        if self.legacy[2] > 0:
            result["miou_legacy"] = float(self.legacy[0] / self.legacy[2])
            result["pixacc_legacy"] = float(self.legacy[1] / self.legacy[2])
        n = self.depth[6]
        if n > 0:
            result["abs_err"] = float(self.depth[0] / n)
            result["abs_rel"] = float(self.depth[1] / n)
            result["rmse"] = float(torch.sqrt(self.depth[2] / n))
            for k in range(3):
                result[f"delta{k + 1}"] = float(self.depth[3 + k] / n)
        if self.consistency[1] > 0:
            result["consistency_depth_abs"] = float(self.consistency[0] / self.consistency[1])
        if self.consistency[3] > 0:
            result["consistency_seg_agree"] = float(self.consistency[2] / self.consistency[3])
        return result
