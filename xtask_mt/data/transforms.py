"""Training augmentation applied identically to a frame's image, labels, depth and mask.

A frame is a dict of HxW(x3) numpy arrays: ``image`` (uint8 or float in [0, 1]), ``seg``,
``depth`` and ``depth_mask``. Random draws come from numpy's global stream, which the
DataLoader's worker init re-seeds per worker, so workers do not repeat each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Frame = dict[str, np.ndarray]

# How the depth target changes when the view is zoomed in by s (the scene comes nearer).
DEPTH_SCALINGS = ("inverse", "proportional", "none")


def depth_scaling_for(target: str, legacy: bool) -> str:
    """'inverse' for metric depth (d / s), 'proportional' for disparity (d * s).

    `legacy` reproduces the original code, which divided metric depth and left disparity
    untouched.
    """
    if target not in ("depth", "disparity"):
        raise ValueError(f"depth target must be 'depth' or 'disparity', got {target!r}")
    if target == "depth":
        return "inverse"
    return "none" if legacy else "proportional"


def resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes, pixel centres aligned; any dtype."""
    h, w = array.shape[:2]
    if (h, w) == (height, width):
        return array
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return array[rows[:, None], cols[None, :]]


class TrainAugmentation:
    """Random horizontal flip and random scale-crop (crop 1/s of the frame, resize back).

    The image is resized bilinearly; labels, depth and mask with the same nearest-neighbour
    mapping, so they stay aligned pixel for pixel.
    """

    def __init__(self, flip: bool = True, scales: Sequence[float] = (1.0, 1.2, 1.5),
                 depth_scaling: str = "inverse") -> None:
        if not scales or any(s < 1.0 for s in scales):
            raise ValueError(f"augmentation scales must be a non-empty list of values >= 1 "
                             f"(zoom factors), got {list(scales)}")
        if depth_scaling not in DEPTH_SCALINGS:
            raise ValueError(f"depth_scaling must be one of {DEPTH_SCALINGS}, got "
                             f"{depth_scaling!r}")
        self.flip, self.scales, self.depth_scaling = flip, tuple(float(s) for s in scales), \
            depth_scaling

    def __call__(self, frame: Frame) -> Frame:
        frame = self._scale_crop(frame, self.scales[np.random.randint(len(self.scales))])
        if self.flip and np.random.random() < 0.5:
            frame = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in frame.items()}
        return frame

    def _scale_crop(self, frame: Frame, scale: float) -> Frame:
        if scale == 1.0:
            return frame
        h, w = frame["seg"].shape
        ch, cw = max(1, round(h / scale)), max(1, round(w / scale))
        top, left = np.random.randint(h - ch + 1), np.random.randint(w - cw + 1)
        crop = {k: v[top:top + ch, left:left + cw] for k, v in frame.items()}
        image = crop["image"]
        out = {k: resize_nearest(v, h, w) for k, v in crop.items() if k != "image"}
        out["image"] = cv2.resize(np.ascontiguousarray(image), (w, h),
                                  interpolation=cv2.INTER_LINEAR)
        if self.depth_scaling == "inverse":
            out["depth"] = out["depth"] / scale
        elif self.depth_scaling == "proportional":
            out["depth"] = out["depth"] * scale
        return out
