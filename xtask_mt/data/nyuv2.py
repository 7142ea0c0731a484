"""NYUv2 in the widely used preprocessed .npy layout: 13-class segmentation and metric depth.

    <root>/<split>/image/<i>.npy   HxWx3 float in [0, 1]
    <root>/<split>/label/<i>.npy   HxW class ids 0..12, -1 = ignore
    <root>/<split>/depth/<i>.npy   HxWx1 (or HxW) metres, 0 = invalid
    <root>/<split>/normal/<i>.npy  HxWx3 surface normals in [-1, 1], 0 = invalid (read only
                                   with `normals=True`, i.e. when the normal task is on)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from xtask_mt.data.files import (
    DatasetError,
    check_shape,
    read_npy,
    require_dir,
    require_file,
    require_no_orphans,
)
from xtask_mt.data.frames import Frame, FrameDataset
from xtask_mt.data.labels import NYUV2_CLASS_NAMES
from xtask_mt.data.transforms import resize_nearest
from xtask_mt.sample import IGNORE_INDEX

DOWNLOAD_HINT = ("Get the preprocessed NYUv2 (train/ and val/ folders of image, label and "
                 "depth .npy files, as distributed with MTAN: github.com/lorenmt/mtan) and "
                 "extract it into dataset.root (see README, Datasets).")
_SUBDIRS = ("image", "label", "depth")


def _order(path: Path) -> tuple[int, int | str]:
    """Numeric file names in numeric order (2 before 10), any others after them by name."""
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


class NYUv2(FrameDataset):
    """One split of preprocessed NYUv2 at (height, width)."""

    name = "nyuv2"
    provides = ("seg", "depth", "depth_mask", "normal")
    depth_unit = "m"
    depth_target = "depth"

    def __init__(self, root: str | Path, split: str, height: int = 288, width: int = 384,
                 normals: bool = False, **kwargs: Any) -> None:
        self.normals = normals
        super().__init__(root, split, height, width, NYUV2_CLASS_NAMES, **kwargs)

    def cache_name(self) -> str:
        return super().cache_name() + ("-normals" if self.normals else "")

    def _index(self) -> list[tuple[Path, ...]]:
        require_dir(self.root, "NYUv2 root (dataset.root)", DOWNLOAD_HINT)
        subdirs = (*_SUBDIRS, "normal") if self.normals else _SUBDIRS
        dirs = [require_dir(self.root / self.split / sub, f"NYUv2 {self.split} {sub} folder",
                            DOWNLOAD_HINT) for sub in subdirs]
        files = []
        for image in sorted(dirs[0].glob("*.npy"), key=_order):
            files.append((image, *(require_file(d / image.name, f"{sub} file of {image}")
                                   for d, sub in zip(dirs[1:], subdirs[1:], strict=True))))
        for column, folder in enumerate(dirs[1:], start=1):
            require_no_orphans(folder, "*.npy", {f[column] for f in files},
                               f"expected {dirs[0]}/<same name>")
        return files

    def decode(self, index: int) -> Frame:
        image_path, label_path, depth_path, *normal_path = self.files[index]
        image = read_npy(image_path)
        if image.ndim != 3 or image.shape[2] != 3:
            raise DatasetError(f"{image_path}: image has shape {image.shape}; expected HxWx3")
        image = image.astype(np.float32)
        if not np.isfinite(image).all() or image.min() < -0.01 or image.max() > 1.01:
            raise DatasetError(f"{image_path}: image values must be finite and in [0, 1]")
        size = image.shape[:2]
        label = read_npy(label_path)
        check_shape(label_path, label, size, f"labels of the {size} image")
        known = np.isfinite(label) & (label == np.round(label)) & (label >= IGNORE_INDEX) & (
            label < len(NYUV2_CLASS_NAMES))
        if not known.all():
            bad = np.unique(label[~known])[:10].tolist()
            raise DatasetError(f"{label_path} holds values {bad} outside the class ids 0..12 "
                               f"and {IGNORE_INDEX} (ignore)")
        depth = read_npy(depth_path)
        if depth.ndim == 3 and depth.shape[2] == 1:
            depth = depth[..., 0]
        check_shape(depth_path, depth, size, f"depth of the {size} image")
        depth = np.nan_to_num(depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)

        h, w = self.height, self.width
        if size != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        depth = resize_nearest(depth, h, w)
        frame = {"image": np.clip(image, 0.0, 1.0), "seg": resize_nearest(label, h, w).astype(
            np.int8), "depth": depth, "depth_mask": depth > 0}
        if normal_path:
            # nearest-neighbour copies whole vectors, so resizing keeps them unit length
            frame["normal"] = resize_nearest(_read_normals(normal_path[0], size), h, w)
        return frame


def _read_normals(path: Path, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 float32 unit vectors (zeros stay zeros: invalid); errors name the file."""
    normal = read_npy(path)
    check_shape(path, normal, (*size, 3), f"normals (HxWx3) of the {size} image")
    normal = normal.astype(np.float32)
    if not np.isfinite(normal).all() or np.abs(normal).max(initial=0.0) > 1.01:
        raise DatasetError(f"{path}: normal components must be finite and in [-1, 1]")
    length = np.linalg.norm(normal, axis=-1, keepdims=True)
    return np.where(length > 1e-3, normal / np.maximum(length, 1e-3), 0.0).astype(np.float32)
