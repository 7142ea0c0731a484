"""The one colour scale for value maps (depth), shared by the evaluation panels and the W&B
sample images so a colour means the same value range everywhere.

viridis reversed: near (small values) is bright yellow, far is dark blue. It is perceptually
uniform and readable in grey and by colour-blind readers, and it differs from the error
maps (magma), so a depth map is never mistaken for an error map.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
from matplotlib import colormaps

DEPTH_CMAP = "viridis_r"   # near = bright
ERROR_CMAP = "magma"


@functools.lru_cache(maxsize=4)
def _lut(name: str) -> np.ndarray:
    """(256, 3) uint8 RGB table of colour map `name`, built once (read-only: it is shared)."""
    table = np.round(colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    table.flags.writeable = False
    return table


def value_range(truth: np.ndarray, valid: np.ndarray,
                predictions: Iterable[np.ndarray] = ()) -> tuple[float, float]:
    """The (lo, hi) a value map is coloured on, the same in panels and W&B previews: the valid
    ground truth's span, widened to the predictions' 1st..99th percentiles (so one wild pixel
    does not flatten the scale), never below 0; non-finite values are left out."""
    shown = truth[valid & np.isfinite(truth)]
    lo, hi = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
    for pred in predictions:
        finite = pred[np.isfinite(pred)]
        if finite.size:
            lo = min(lo, float(np.percentile(finite, 1)))
            hi = max(hi, float(np.percentile(finite, 99)))
    return max(lo, 0.0), hi


def colour_values(values: np.ndarray, lo: float, hi: float,
                  valid: np.ndarray | None = None) -> np.ndarray:
    """HxW values -> HxWx3 uint8 RGB on DEPTH_CMAP, `lo`..`hi` spread over the whole map;
    pixels outside `valid` and non-finite values (a diverged prediction) black."""
    finite = np.isfinite(values)
    scaled = (np.clip(np.where(finite, values, lo), lo, hi) - lo) / max(hi - lo, 1e-8)
    rgb = _lut(DEPTH_CMAP)[np.round(scaled * 255).astype(np.int64)]
    rgb[~finite] = 0
    if valid is not None:
        rgb[~valid] = 0
    return rgb


def colour_bar(height: int, width: int) -> np.ndarray:
    """HxWx3 uint8 vertical strip of DEPTH_CMAP: the low end (lo) at the top, hi at the
    bottom, to stand beside images drawn by `colour_values`."""
    column = _lut(DEPTH_CMAP)[np.round(np.linspace(0, 255, max(height, 1))).astype(np.int64)]
    return np.repeat(column[:, None, :], max(width, 1), axis=1)
