"""Reading dataset files with errors that name the file and say what to do."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from xtask_mt.errors import UserError


class DatasetError(UserError, ValueError):
    """A dataset on disk is missing, incomplete or holds something it should not."""


def require_dir(path: Path, what: str, hint: str) -> Path:
    """`path` if it is a folder, else a DatasetError saying what was expected there."""
    if not path.is_dir():
        raise DatasetError(f"{what} not found: expected the folder {path}. {hint}")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"missing {what}: {path} does not exist. Every frame needs it; "
                           "restore the file or remove the frame from the split.")
    return path


def require_no_orphans(folder: Path, pattern: str, expected: set[Path], what: str) -> None:
    """A DatasetError naming the first file matching `pattern` under `folder` that is not in
    `expected` (a label or depth file whose image is missing), rather than skipping it."""
    orphans = sorted(p for p in folder.glob(pattern) if p not in expected)
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise DatasetError(f"{orphans[0]}{more} has no matching image ({what}): restore the "
                           "image, or remove the file from the split.")


def read_png(path: Path, color: bool, dtype: type[np.generic]) -> np.ndarray:
    """Decode a PNG: RGB HxWx3 when `color`, else the stored single channel, of `dtype`."""
    flags = cv2.IMREAD_COLOR if color else cv2.IMREAD_UNCHANGED
    data = np.fromfile(str(path), dtype=np.uint8)
    array = cv2.imdecode(data, flags) if data.size else None
    if array is None:
        raise DatasetError(f"cannot decode {path}: the file is corrupt or truncated. "
                           "Re-extract it from the dataset archive.")
    if color:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    elif array.ndim != 2:
        raise DatasetError(f"{path} has shape {array.shape}; expected a single-channel image")
    if array.dtype != dtype:
        raise DatasetError(f"{path} holds {array.dtype} pixels; expected {np.dtype(dtype)}")
    return array


def read_npy(path: Path) -> np.ndarray:
    """Load a .npy array (no pickles)."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DatasetError(f"cannot read {path}: {err}. The file is corrupt or truncated; "
                           "re-extract it from the dataset archive.") from err


def check_shape(path: Path, array: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if array.shape != shape:
        raise DatasetError(f"{path}: {what} has shape {array.shape}; expected {shape}")
