"""Cityscapes in its raw layout: 7-class (categories) or 19-class (trainIds) segmentation and
the disparity target.

    <root>/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<name>_gtFine_labelIds.png
    <root>/disparity/<split>/<city>/<name>_disparity.png

Disparity PNGs store p = 256 * d + 1 for a disparity of d pixels, 0 where invalid. The target
is d / 256 clipped to MAX_TARGET, as in the original work. p = 1 (zero disparity, infinitely
far) is masked too: it has no finite depth and would make relative errors divide by zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from xtask_mt.data.files import (
    DatasetError,
    check_shape,
    read_png,
    require_dir,
    require_file,
    require_no_orphans,
)
from xtask_mt.data.frames import Frame, FrameDataset
from xtask_mt.data.labels import CITYSCAPES_CLASS_NAMES, UNKNOWN, cityscapes_lookup
from xtask_mt.data.transforms import resize_nearest

MAX_TARGET = 0.4922
DOWNLOAD_HINT = ("Download leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip and "
                 "disparity_trainvaltest.zip from https://www.cityscapes-dataset.com/downloads/ "
                 "and extract them into dataset.root (see README, Datasets).")


def disparity_target(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """16-bit disparity PNG values -> (target d/256 clipped to MAX_TARGET, validity mask)."""
    valid = raw > 1
    disparity = (raw.astype(np.float32) - 1.0) / 256.0
    target = np.where(valid, np.minimum(disparity / 256.0, MAX_TARGET), 0.0)
    return target.astype(np.float32), valid


class Cityscapes(FrameDataset):
    """One split of Cityscapes at (height, width); image area-resized, labels and disparity
    nearest."""

    name = "cityscapes"
    depth_unit = "disparity px / 256"
    depth_target = "disparity"

    def __init__(self, root: str | Path, split: str, num_classes: int = 7, height: int = 128,
                 width: int = 256, **kwargs: Any) -> None:
        self.lookup = cityscapes_lookup(num_classes)
        super().__init__(root, split, height, width, CITYSCAPES_CLASS_NAMES[num_classes],
                         **kwargs)

    def _index(self) -> list[tuple[Path, ...]]:
        require_dir(self.root, "Cityscapes root (dataset.root)", DOWNLOAD_HINT)
        images_dir = require_dir(self.root / "leftImg8bit" / self.split,
                                 f"Cityscapes {self.split} images", DOWNLOAD_HINT)
        labels_dir = require_dir(self.root / "gtFine" / self.split,
                                 f"Cityscapes {self.split} labels", DOWNLOAD_HINT)
        disparity_dir = require_dir(self.root / "disparity" / self.split,
                                    f"Cityscapes {self.split} disparity", DOWNLOAD_HINT)
        files = []
        for image in sorted(images_dir.glob("*/*_leftImg8bit.png")):
            stem = image.name[: -len("_leftImg8bit.png")]
            city = image.parent.name
            label = require_file(labels_dir / city / f"{stem}_gtFine_labelIds.png",
                                 f"label file of {image.name}")
            disparity = require_file(disparity_dir / city / f"{stem}_disparity.png",
                                     f"disparity file of {image.name}")
            files.append((image, label, disparity))
        require_no_orphans(labels_dir, "*/*_gtFine_labelIds.png", {f[1] for f in files},
                           f"expected under {images_dir}")
        require_no_orphans(disparity_dir, "*/*_disparity.png", {f[2] for f in files},
                           f"expected under {images_dir}")
        return files

    def decode(self, index: int) -> Frame:
        image_path, label_path, disparity_path = self.files[index]
        image = read_png(image_path, color=True, dtype=np.uint8)
        size = image.shape[:2]
        label_ids = read_png(label_path, color=False, dtype=np.uint8)
        check_shape(label_path, label_ids, size, f"labels of the {size} image")
        raw = read_png(disparity_path, color=False, dtype=np.uint16)
        check_shape(disparity_path, raw, size, f"disparity of the {size} image")

        seg = self.lookup[label_ids]
        if (seg == UNKNOWN).any():
            bad = sorted(int(v) for v in np.unique(label_ids[seg == UNKNOWN]))
            raise DatasetError(f"{label_path} holds values {bad[:10]} that are no Cityscapes "
                               "label id (0..33, 255 = license plate); expected a "
                               "*_gtFine_labelIds.png file")
        h, w = self.height, self.width
        if size != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        depth, valid = disparity_target(resize_nearest(raw, h, w))
        return {"image": image, "seg": resize_nearest(seg, h, w), "depth": depth,
                "depth_mask": valid}
