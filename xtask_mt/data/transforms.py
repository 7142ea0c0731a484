"""Training augmentation applied identically to every map of a frame.

A frame is a dict of HxW(xk) numpy arrays: ``image`` (uint8 or float in [0, 1]) and the
tasks' maps (``seg``, ``depth``, ``depth_mask``, ...). How a map flips and how its values
change on a zoom is its `FieldRule`, which the task registry supplies. Random draws come
from numpy's global stream, which the DataLoader's worker init re-seeds per worker, so
workers do not repeat each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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


def zoom_depth(depth_scaling: str) -> Callable[[np.ndarray, float], np.ndarray] | None:
    """How depth values change when the view is zoomed in by s (see DEPTH_SCALINGS)."""
    if depth_scaling not in DEPTH_SCALINGS:
        raise ValueError(f"depth_scaling must be one of {DEPTH_SCALINGS}, got "
                         f"{depth_scaling!r}")
    if depth_scaling == "inverse":
        return lambda depth, scale: depth / scale
    if depth_scaling == "proportional":
        return lambda depth, scale: depth * scale
    return None


def mirror(array: np.ndarray) -> np.ndarray:
    """Left-right flip of an HxW(xk) map."""
    return np.ascontiguousarray(array[:, ::-1])


@dataclass(frozen=True)
class FieldRule:
    """How augmentation treats one map of a frame: `flip` mirrors it (a vector field would
    also negate its x component); `zoom`, if set, changes its values when the view is zoomed
    in by s (after the nearest-neighbour resize)."""

    flip: Callable[[np.ndarray], np.ndarray] = mirror
    zoom: Callable[[np.ndarray, float], np.ndarray] | None = None


_DEFAULT_RULE = FieldRule()


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

    The image is resized bilinearly; every other map with the same nearest-neighbour
    mapping, so they stay aligned pixel for pixel. `rules` give the maps that flip or zoom
    otherwise than by default (see FieldRule).
    """

    def __init__(self, flip: bool = True, scales: Sequence[float] = (1.0, 1.2, 1.5),
                 rules: Mapping[str, FieldRule] | None = None) -> None:
        if not scales or any(s < 1.0 for s in scales):
            raise ValueError(f"augmentation scales must be a non-empty list of values >= 1 "
                             f"(zoom factors), got {list(scales)}")
        self.flip, self.scales = flip, tuple(float(s) for s in scales)
        self.rules = dict(rules or {})

    def _rule(self, key: str) -> FieldRule:
        return self.rules.get(key, _DEFAULT_RULE)

    def __call__(self, frame: Frame) -> Frame:
        frame = self._scale_crop(frame, self.scales[np.random.randint(len(self.scales))])
        if self.flip and np.random.random() < 0.5:
            frame = {k: self._rule(k).flip(v) for k, v in frame.items()}
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
        for key, value in out.items():
            zoom = self._rule(key).zoom
            if zoom is not None:
                out[key] = zoom(value, scale)
        return out
