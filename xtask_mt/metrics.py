"""Evaluation metrics accumulated on the device with bincount updates.

Segmentation: mIoU and pixel accuracy from one confusion matrix over the whole evaluation
set (the standard), plus the legacy per-image figures (IoU averaged over the classes present
in each image, then over images) for comparison with older papers. Depth: errors over valid
pixels, in the target's own unit. Consistency: how far the transferred predictions are from
the direct ones.
"""

from __future__ import annotations

import torch

from xtask_mt.data.sample import IGNORE_INDEX

DELTA_THRESHOLDS = (1.25, 1.25**2, 1.25**3)
_DEPTH_EPS = 1e-6


def class_map(logits: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) scores -> (N, H, W) class ids. max() is several times faster than
    argmax() over the strided class axis on CPU and gives the same (first) index."""
    return logits.max(dim=1).indices


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts, rows = ground truth, columns = prediction; ignored pixels skipped."""
    valid = target != IGNORE_INDEX
    index = target[valid] * num_classes + pred[valid]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_image_confusion(pred: torch.Tensor, target: torch.Tensor,
                        num_classes: int) -> torch.Tensor:
    """(N, C, C) confusion matrix of each image of a batch, from one bincount."""
    n = pred.shape[0]
    valid = target != IGNORE_INDEX
    image_id = torch.arange(n, device=pred.device).view(n, *([1] * (pred.dim() - 1)))
    bins = n * num_classes**2
    index = (image_id * num_classes + target) * num_classes + pred
    index = torch.where(valid, index, bins)  # ignored pixels go to one extra bin, dropped
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


class MultiTaskMetrics:
    """Accumulates metric sums over batches; compute() turns them into figures."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.device = torch.device(device)
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
        """Add one batch. Masks multiply instead of indexing, so no step waits for the
        host to learn how many pixels are valid."""
        seg_pred = class_map(out["seg"]) if "seg" in out else None
        if seg_pred is not None:
            self._update_seg(seg_pred, batch["seg"])
        if "depth" in out:
            self._update_depth(out["depth"], batch["depth"], batch["depth_mask"])
        if "tdepth" in out:
            diff = (out["tdepth"].float() - out["depth"].float()).abs()
            mask = batch["depth_mask"]
            self.consistency[0] += (diff * mask).sum(dtype=torch.float64)
            self.consistency[1] += mask.sum()
        if "tseg" in out and seg_pred is not None:
            labelled = batch["seg"] != IGNORE_INDEX
            agree = (class_map(out["tseg"]) == seg_pred) & labelled
            self.consistency[2] += agree.sum()
            self.consistency[3] += labelled.sum()

    def _update_seg(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        per_image = per_image_confusion(pred, target, self.num_classes)
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

    def _update_depth(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        p = pred.double()
        t = torch.where(mask, target.double(), 1.0)  # invalid pixels: any non-zero value
        err = (p - t).abs() * mask
        ratio = torch.maximum(p.clamp(min=_DEPTH_EPS) / t, t / p.clamp(min=_DEPTH_EPS))
        self.depth[0] += err.sum()
        self.depth[1] += (err / t).sum()
        self.depth[2] += (err * err).sum()
        thresholds = torch.tensor(DELTA_THRESHOLDS, dtype=ratio.dtype, device=ratio.device)
        within = (ratio.unsqueeze(0) < thresholds.view(-1, *([1] * ratio.dim()))) & mask
        self.depth[3:6] += within.flatten(1).sum(dim=1)
        self.depth[6] += mask.sum()

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
