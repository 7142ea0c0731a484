"""Procedural street scenes whose segmentation, depth and surface normals agree.

Geometry: a camera above a ground plane. Ground depth grows towards the horizon
(depth = K / (row - horizon)), the sky is far, and every object stands on the ground at
its own depth, so its base row is where the ground has that depth. Objects are painted
far to near. Colour depends on class, fades into haze with distance, and carries noise.
Depth is given in far-plane units (metres / 20, so the sky is 1.0), close to the range of
the Cityscapes disparity target. Surface normals follow the same geometry, in the camera
frame (x right, y up, z towards the camera): the ground faces up (0, 1, 0), every object is
a billboard facing the camera (0, 0, 1), and the sky (and the unlabelled bonnet) has none.
Each scene is a pure function of (seed, split, index), so the dataset is deterministic and
needs no files.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from xtask_mt.data.splits import TEST, TRAIN, VAL
from xtask_mt.sample import IGNORE_INDEX, make_sample

CLASS_NAMES: tuple[str, ...] = (
    "flat", "construction", "object", "nature", "sky", "human", "vehicle",
)
FLAT, CONSTRUCTION, OBJECT, NATURE, SKY, HUMAN, VEHICLE = range(7)
MAX_DEPTH = 20.0
_HAZE = np.array([0.75, 0.78, 0.82], dtype=np.float32)
_SPLIT_IDS = {TRAIN: 0, VAL: 1, TEST: 2}
UP = np.array([0.0, 1.0, 0.0], np.float32)
FACING = np.array([0.0, 0.0, 1.0], np.float32)
NO_NORMAL = np.zeros(3, np.float32)


class _Canvas:
    """Image, label and depth buffers painted back to front."""

    def __init__(self, height: int, width: int) -> None:
        self.h, self.w = height, width
        self.image = np.zeros((height, width, 3), np.float32)
        self.seg = np.zeros((height, width), np.int64)
        self.depth = np.zeros((height, width), np.float32)
        self.normal = np.zeros((height, width, 3), np.float32)

    def paint(self, mask: np.ndarray, cls: int, colour: np.ndarray, depth: float | np.ndarray,
              rng: np.random.Generator, texture: float = 0.05,
              normal: np.ndarray = FACING) -> None:
        """Paint `mask` with a class colour faded by depth plus per-pixel texture noise."""
        d = np.broadcast_to(depth, mask.shape)[mask]
        haze = np.clip(d / MAX_DEPTH, 0.0, 1.0)[:, None] * 0.6
        noise = rng.normal(0.0, texture, size=(d.shape[0], 3)).astype(np.float32)
        self.image[mask] = (1 - haze) * colour + haze * _HAZE + noise
        self.seg[mask] = cls
        self.depth[mask] = d
        self.normal[mask] = normal


def _rect(h: int, w: int, top: float, bottom: float, left: float, right: float) -> np.ndarray:
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    return (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    return ((rows - cy) / max(ry, 0.5)) ** 2 + ((cols - cx) / max(rx, 0.5)) ** 2 <= 1.0


def render_scene(height: int, width: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (image HxWx3 in [0,1], labels HxW, depth HxW, depth validity HxW, normals
    HxWx3 with zeros where there is none)."""
    c = _Canvas(height, width)
    horizon = rng.uniform(0.35, 0.5) * height
    k = rng.uniform(1.0, 1.4) * height  # ground depth = k / (row - horizon)
    focal = k / 1.5  # pixels per metre at depth 1 for a camera 1.5 m above the ground
    rows = np.arange(height, dtype=np.float32)[:, None] + 0.5
    ground_depth = np.clip(k / np.maximum(rows - horizon, 1e-3), 0.0, MAX_DEPTH)
    ground_depth = np.broadcast_to(ground_depth, (height, width))

    sky = np.broadcast_to(rows < horizon, (height, width))
    sky_colour = np.array([0.45, 0.65, 0.95], np.float32) + rng.normal(0, 0.05, 3).astype(
        np.float32)
    c.paint(sky, SKY, sky_colour, MAX_DEPTH, rng, texture=0.02, normal=NO_NORMAL)
    ground_colour = np.array([0.35, 0.35, 0.38], np.float32) * rng.uniform(0.8, 1.2)
    c.paint(~sky, FLAT, ground_colour, ground_depth, rng, texture=0.04, normal=UP)

    def base_row(depth: float) -> float:
        return horizon + k / depth

    objects = []
    for _ in range(rng.integers(1, 4)):  # buildings, far
        objects.append((CONSTRUCTION, rng.uniform(10.0, 18.0)))
    for _ in range(rng.integers(1, 4)):
        objects.append((NATURE, rng.uniform(5.0, 16.0)))
    for _ in range(rng.integers(0, 3)):
        objects.append((OBJECT, rng.uniform(3.0, 14.0)))
    for _ in range(rng.integers(0, 3)):
        objects.append((HUMAN, rng.uniform(2.5, 12.0)))
    for _ in range(rng.integers(1, 4)):
        objects.append((VEHICLE, rng.uniform(2.5, 14.0)))
    objects.sort(key=lambda o: -o[1])

    h, w = height, width
    for cls, d in objects:
        bottom = base_row(d)
        scale = focal / d  # pixels per metre at this depth
        cx = rng.uniform(0, w)
        if cls == CONSTRUCTION:
            bw, bh = rng.uniform(0.2, 0.45) * w, scale * rng.uniform(6, 15)
            mask = _rect(h, w, bottom - bh, bottom, cx - bw / 2, cx + bw / 2)
            colour = np.array([0.6, 0.35, 0.25], np.float32) * rng.uniform(0.7, 1.3)
            c.paint(mask, CONSTRUCTION, colour, d, rng)
            windows = mask & (np.arange(h)[:, None] % 4 < 2) & (np.arange(w)[None, :] % 5 < 2)
            c.image[windows] *= 0.6
        elif cls == NATURE:
            r = scale * rng.uniform(1.0, 2.0)
            trunk = _rect(h, w, bottom - 1.5 * r, bottom, cx - 0.15 * r, cx + 0.15 * r)
            crown = _ellipse(h, w, bottom - 2.2 * r, cx, r, 0.8 * r)
            colour = np.array([0.2, 0.55, 0.2], np.float32) * rng.uniform(0.8, 1.2)
            c.paint(trunk | crown, NATURE, colour, d, rng, texture=0.08)
        elif cls == OBJECT:
            pw, ph = max(1.0, scale * 0.25), scale * rng.uniform(3.0, 5.0)
            mask = _rect(h, w, bottom - ph, bottom, cx - pw / 2, cx + pw / 2)
            c.paint(mask, OBJECT, np.array([0.9, 0.8, 0.2], np.float32), d, rng)
        elif cls == HUMAN:
            ph = scale * rng.uniform(1.6, 1.9)
            mask = _ellipse(h, w, bottom - ph / 2, cx, ph / 2, ph / 6)
            colour = rng.uniform(0.5, 1.0, 3).astype(np.float32) * np.array([1.0, 0.5, 0.5],
                                                                               np.float32)
            c.paint(mask, HUMAN, colour, d, rng)
        else:  # vehicle
            vw, vh = scale * rng.uniform(3.5, 4.5), scale * rng.uniform(1.3, 1.7)
            mask = _rect(h, w, bottom - vh, bottom, cx - vw / 2, cx + vw / 2)
            colour = rng.uniform(0.0, 0.4, 3).astype(np.float32)
            colour[rng.integers(3)] = rng.uniform(0.7, 1.0)
            c.paint(mask, VEHICLE, colour, d, rng)

    image = np.clip(c.image, 0.0, 1.0)
    valid = np.ones((h, w), bool)
    # Sensor-like dropouts: invalid depth, labels untouched.
    valid &= rng.random((h, w)) > 0.02
    # Ego-vehicle bonnet in some scenes: unlabelled and without depth, like real datasets.
    if rng.random() < 0.5:
        bonnet = _ellipse(h, w, h * 1.05, w / 2, h * rng.uniform(0.08, 0.15), w * 0.6)
        image[bonnet] = np.array([0.1, 0.1, 0.12], np.float32)
        c.seg[bonnet] = IGNORE_INDEX
        c.normal[bonnet] = NO_NORMAL
        valid &= ~bonnet
    depth = np.where(valid, c.depth / MAX_DEPTH, 0.0).astype(np.float32)
    return image, c.seg, depth, valid, c.normal


class SyntheticScenes(Dataset):
    """`size` deterministic synthetic scenes of one split (7 classes, depth in far-plane units)."""

    name = "synthetic"
    class_names = CLASS_NAMES
    num_classes = len(CLASS_NAMES)
    depth_unit = "far-plane units"

    provides = ("seg", "depth", "depth_mask", "normal")

    def __init__(self, split: str = "train", size: int = 64, height: int = 64, width: int = 128,
                 seed: int = 0, normals: bool = False) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
        if size < 1 or height < 1 or width < 1:
            raise ValueError(f"size, height and width must be positive, got {size}, {height}, "
                             f"{width}")
        self.split, self.size, self.height, self.width, self.seed = split, size, height, width, seed
        self.normals = normals

    def __len__(self) -> int:
        return self.size

    def frame(self, index: int) -> dict[str, np.ndarray]:
        """Scene `index` as HxW(xk) maps named as in the sample, before it becomes one."""
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
        image, seg, depth, valid, normal = render_scene(self.height, self.width, rng)
        frame = {"image": image, "seg": seg, "depth": depth, "depth_mask": valid}
        return {**frame, "normal": normal} if self.normals else frame

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return make_sample(**self.frame(index))
