"""The one colour scale for value maps (depth), shared by the evaluation panels and the W&B
sample images so a colour means the same value range everywhere.

viridis reversed: near (small values) is bright yellow, far is dark blue. It is perceptually
uniform and readable in grey and by colour-blind readers, and it differs from the error
maps (magma), so a depth map is never mistaken for an error map.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

DEPTH_CMAP = "viridis_r"   # near = bright
ERROR_CMAP = "magma"


def _lut(name: str) -> np.ndarray:
    """(256, 3) uint8 RGB table of colour map `name`."""
    return np.round(colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def colour_values(values: np.ndarray, lo: float, hi: float,
                  valid: np.ndarray | None = None) -> np.ndarray:
    """HxW values -> HxWx3 uint8 RGB on DEPTH_CMAP, `lo`..`hi` spread over the whole map;
    pixels outside `valid` black."""
    scaled = (np.clip(values, lo, hi) - lo) / max(hi - lo, 1e-8)
    rgb = _lut(DEPTH_CMAP)[np.round(scaled * 255).astype(np.int64)]
    if valid is not None:
        rgb[~valid] = 0
    return rgb


def colour_bar(height: int, width: int) -> np.ndarray:
    """HxWx3 uint8 vertical strip of DEPTH_CMAP: the low end (lo) at the top, hi at the
    bottom, to stand beside images drawn by `colour_values`."""
    column = _lut(DEPTH_CMAP)[np.round(np.linspace(0, 255, max(height, 1))).astype(np.int64)]
    return np.repeat(column[:, None, :], max(width, 1), axis=1)
