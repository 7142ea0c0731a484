"""Validation samples as plain arrays: the input image, label maps, colour-mapped depth.

Trackers turn these into their own image types; this module knows nothing of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from xtask_mt.data.sample import IGNORE_INDEX, denormalise_image


@dataclass
class SamplePreview:
    """One validation sample: RGB uint8 image, HxW label maps (ignored pixels = `void_id`)
    and HxWx3 uint8 colour-mapped depth maps (invalid ground truth drawn black)."""

    image: np.ndarray
    seg: dict[str, np.ndarray]
    depth: dict[str, np.ndarray]
    void_id: int


def colour_depth(depth: np.ndarray, lo: float, hi: float,
                 valid: np.ndarray | None = None) -> np.ndarray:
    """HxW depth -> HxWx3 uint8 RGB (near = bright), `lo`..`hi` spread over the colour map."""
    scaled = (np.clip(depth, lo, hi) - lo) / max(hi - lo, 1e-8)
    grey = np.round((1.0 - scaled) * 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)
    if valid is not None:
        rgb[~valid] = 0
    return rgb


def _labels(logits: torch.Tensor) -> np.ndarray:
    return logits.argmax(dim=0).cpu().numpy().astype(np.int64)


def sample_previews(batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor],
                    num_classes: int, count: int) -> list[SamplePreview]:
    """Previews of the first `count` samples of `batch` with the model's `outputs`.

    Segmentation: direct, transferred (depth->seg) when present, ground truth. Depth: the same,
    all three on the ground truth's valid range so their colours compare.
    """
    previews = []
    for i in range(min(count, batch["image"].shape[0])):
        truth = batch["seg"][i].cpu().numpy().astype(np.int64)
        seg = {"direct": _labels(outputs["seg"][i])} if "seg" in outputs else {}
        if "tseg" in outputs:
            seg["transferred"] = _labels(outputs["tseg"][i])
        seg["ground_truth"] = np.where(truth == IGNORE_INDEX, num_classes, truth)

        gt = batch["depth"][i, 0].cpu().numpy()
        valid = batch["depth_mask"][i, 0].cpu().numpy().astype(bool)
        lo, hi = (float(gt[valid].min()), float(gt[valid].max())) if valid.any() else (0.0, 1.0)
        depth = {}
        for key, name in (("depth", "direct"), ("tdepth", "transferred")):
            if key in outputs:
                depth[name] = colour_depth(outputs[key][i, 0].float().cpu().numpy(), lo, hi)
        depth["ground_truth"] = colour_depth(gt, lo, hi, valid)

        image = np.round(denormalise_image(batch["image"][i]) * 255).astype(np.uint8)
        previews.append(SamplePreview(image=image, seg=seg, depth=depth, void_id=num_classes))
    return previews
