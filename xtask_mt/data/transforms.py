"""Training augmentation applied identically to every map of a frame.

A frame is a dict of HxW(xk) numpy arrays: ``image`` (uint8 or float in [0, 1]) and the
tasks' maps (``seg``, ``depth``, ``depth_mask``, ...). How a map's values change on a flip
or a zoom is its `FieldRule`, which the task registry supplies. Random draws come from
numpy's global stream, which the DataLoader's worker init re-seeds per worker, so workers do
not repeat each other. Each frame's draws are one `View`, which the batched device path
(data.device_batches) applies to the same frames in the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    """How augmentation changes the values of one map, beyond moving its pixels:
    `flip_values`, if set, when the view is mirrored (a vector field negates its x
    component); `zoom`, if set, when the view is zoomed in by s (after the resize).

    Both are given channel-last maps: numpy HxW(xk) arrays and a float s on the CPU path,
    torch NxHxW(xk) tensors and s as a float32 tensor broadcast over them on the device path,
    so they are written with operators the two share.
    """

    flip_values: Callable[[Any], Any] | None = None
    zoom: Callable[[Any, Any], Any] | None = None


_DEFAULT_RULE = FieldRule()


def nearest_indices(size: int, out: int) -> np.ndarray:
    """Source index of each of `out` pixels resampled from `size`, pixel centres aligned."""
    return np.minimum(((np.arange(out) + 0.5) * size / out).astype(np.int64), size - 1)


def resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes, pixel centres aligned; any dtype."""
    h, w = array.shape[:2]
    if (h, w) == (height, width):
        return array
    rows, cols = nearest_indices(h, height), nearest_indices(w, width)
    return array[rows[:, None], cols[None, :]]


@dataclass(frozen=True)
class View:
    """One frame's augmentation draw: the crop (`top`, `left`, `height` x `width`) that is
    zoomed back to the frame's size by `scale`, and whether the result is mirrored."""

    scale: float
    top: int
    left: int
    height: int
    width: int
    flipped: bool


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

    def rule(self, key: str) -> FieldRule:
        return self.rules.get(key, _DEFAULT_RULE)

    def draw(self, height: int, width: int) -> View:
        """The random view of a height x width frame: a scale, then (zoomed in) the crop's
        top and left, then (with flips on) the flip, in this order from numpy's stream."""
        scale = self.scales[np.random.randint(len(self.scales))]
        top = left = 0
        ch, cw = height, width
        if scale != 1.0:
            ch, cw = max(1, round(height / scale)), max(1, round(width / scale))
            top, left = np.random.randint(height - ch + 1), np.random.randint(width - cw + 1)
        flipped = bool(self.flip and np.random.random() < 0.5)
        return View(scale, int(top), int(left), ch, cw, flipped)

    def __call__(self, frame: Frame) -> Frame:
        view = self.draw(*frame["seg"].shape)
        if view.scale != 1.0:
            frame = self._scale_crop(frame, view)
        if view.flipped:
            frame = {k: self._flip(k, v) for k, v in frame.items()}
        return frame

    def _flip(self, key: str, array: np.ndarray) -> np.ndarray:
        values = self.rule(key).flip_values
        return mirror(array) if values is None else values(mirror(array))

    def _scale_crop(self, frame: Frame, view: View) -> Frame:
        h, w = frame["seg"].shape
        rows, cols = slice(view.top, view.top + view.height), slice(view.left,
                                                                     view.left + view.width)
        crop = {k: v[rows, cols] for k, v in frame.items()}
        out = {k: resize_nearest(v, h, w) for k, v in crop.items() if k != "image"}
        out["image"] = cv2.resize(np.ascontiguousarray(crop["image"]), (w, h),
                                  interpolation=cv2.INTER_LINEAR)
        for key, value in out.items():
            zoom = self.rule(key).zoom
            if zoom is not None:
                out[key] = zoom(value, view.scale)
        return out
