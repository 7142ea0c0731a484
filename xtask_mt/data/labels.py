"""Class maps built from the official Cityscapes label table, and the NYUv2 13 class names.

Cityscapes `*_labelIds.png` files hold the official label ids (0..33). License plate has
id -1, which an 8-bit PNG stores as 255. Lookup tables map every 8-bit value to a training
class or IGNORE_INDEX; values that are not official ids map to UNKNOWN so a loader can reject
them instead of training on garbage.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS

from xtask_mt.sample import IGNORE_INDEX

UNKNOWN = -2  # lookup-table value of an 8-bit label that is not an official id

_VOID_CATEGORY_ID = 0
_CATEGORY_NAMES: dict[int, str] = {
    lab.categoryId: lab.category
    for lab in _CITYSCAPES_LABELS if lab.categoryId != _VOID_CATEGORY_ID
}
_TRAIN_NAMES: dict[int, str] = {
    lab.trainId: lab.name for lab in _CITYSCAPES_LABELS if 0 <= lab.trainId < 255
}

CITYSCAPES_CLASS_NAMES: dict[int, tuple[str, ...]] = {
    7: tuple(_CATEGORY_NAMES[k] for k in sorted(_CATEGORY_NAMES)),
    19: tuple(_TRAIN_NAMES[k] for k in sorted(_TRAIN_NAMES)),
}

NYUV2_CLASS_NAMES: tuple[str, ...] = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa",
    "table", "tv", "wall", "window",
)


def _train_class(label_id: int, num_classes: int) -> int:
    lab = next(lab for lab in _CITYSCAPES_LABELS if lab.id == label_id)
    if num_classes == 7:
        return IGNORE_INDEX if lab.categoryId == _VOID_CATEGORY_ID else lab.categoryId - 1
    return lab.trainId if 0 <= lab.trainId < 255 else IGNORE_INDEX


def cityscapes_lookup(num_classes: int) -> np.ndarray:
    """256-entry int8 table: 8-bit label id -> class (0..C-1), IGNORE_INDEX, or UNKNOWN."""
    if num_classes not in CITYSCAPES_CLASS_NAMES:
        raise ValueError(f"Cityscapes num_classes must be 7 (categories) or 19 (trainIds), "
                         f"got {num_classes}")
    table = np.full(256, UNKNOWN, dtype=np.int8)
    for lab in _CITYSCAPES_LABELS:
        table[lab.id % 256] = _train_class(lab.id, num_classes)
    return table
