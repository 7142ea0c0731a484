"""PNG figures of what a model sees: per-sample panels and a per-class IoU bar chart.

Knows arrays only (no model, no engine, no tracker). Segmentation is drawn in the dataset's
palette, picked by class names (Cityscapes colours for Cityscapes names) with a fallback for
unknown names, so the same class always gets the same colour across figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Colours of the official Cityscapes label table (trainIds), plus one per category (the
# colour of its most common member class), as RGB 0..255.
_NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70),
    "wall": (102, 102, 156), "fence": (190, 153, 153), "pole": (153, 153, 153),
    "traffic light": (250, 170, 30), "traffic sign": (220, 220, 0),
    "vegetation": (107, 142, 35), "terrain": (152, 251, 152), "sky": (70, 130, 180),
    "person": (220, 20, 60), "rider": (255, 0, 0), "car": (0, 0, 142), "truck": (0, 0, 70),
    "bus": (0, 60, 100), "train": (0, 80, 100), "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
    "flat": (128, 64, 128), "construction": (70, 70, 70), "object": (250, 170, 30),
    "nature": (107, 142, 35), "human": (220, 20, 60), "vehicle": (0, 0, 142),
}
IGNORE_COLOUR = (0, 0, 0)
DEPTH_CMAP = "viridis_r"   # near = bright
ERROR_CMAP = "magma"


def palette(class_names: Sequence[str]) -> np.ndarray:
    """(C, 3) uint8 colours: known names get their dataset colour, others tab20 colours."""
    fallback = (np.array(plt.get_cmap("tab20").colors) * 255).round().astype(np.uint8)
    colours = []
    for i, name in enumerate(class_names):
        key = name.lower().replace("_", " ")
        colours.append(_NAMED_COLOURS.get(key, tuple(fallback[i % len(fallback)])))
    return np.asarray(colours, dtype=np.uint8)


def colourise(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """HxW class ids -> HxWx3 uint8; ids outside [0, C) (ignore) are black."""
    out = np.zeros((*labels.shape, 3), np.uint8)
    out[:] = IGNORE_COLOUR
    valid = (labels >= 0) & (labels < len(colours))
    out[valid] = colours[labels[valid]]
    return out


def _show_labels(ax: plt.Axes, labels: np.ndarray | None, colours: np.ndarray,
                 title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    if labels is None:
        ax.text(0.5, 0.5, "not predicted\nby this model", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
        return
    ax.imshow(colourise(labels, colours), interpolation="nearest")


def _show_depth(ax: plt.Axes, depth: np.ndarray | None, mask: np.ndarray | None,
                vmin: float, vmax: float, title: str, cmap: str = DEPTH_CMAP,
                invalid: str = "black"):
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    if depth is None:
        ax.text(0.5, 0.5, "not predicted\nby this model", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
        return None
    shown = np.ma.masked_where(~mask, depth) if mask is not None else depth
    cm = plt.get_cmap(cmap).with_extremes(bad=invalid)
    return ax.imshow(shown, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")


def sample_panel(path: Path, image: np.ndarray, seg_gt: np.ndarray, depth_gt: np.ndarray,
                 depth_mask: np.ndarray, class_names: Sequence[str],
                 seg: np.ndarray | None = None, tseg: np.ndarray | None = None,
                 depth: np.ndarray | None = None, tdepth: np.ndarray | None = None,
                 depth_unit: str = "", title: str = "") -> Path:
    """Write one sample's panel: image and segmentation (ground truth, direct, transferred)
    on top; depth (ground truth, direct, transferred) on one colour scale and the direct
    depth's absolute error below. Missing predictions get an empty, labelled cell."""
    colours = palette(class_names)
    valid = depth_gt[depth_mask]
    predicted = [d for d in (depth, tdepth) if d is not None]
    lo, hi = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 1.0)
    for d in predicted:  # robust bounds so one wild pixel does not flatten the scale
        lo = min(lo, float(np.percentile(d, 1)))
        hi = max(hi, float(np.percentile(d, 99)))
    lo = max(lo, 0.0)
    fig, axes = plt.subplots(2, 4, figsize=(14, 5.2), constrained_layout=True)
    axes[0, 0].imshow(np.clip(image, 0, 1))
    axes[0, 0].set_title("image", fontsize=9)
    axes[0, 0].axis("off")
    _show_labels(axes[0, 1], seg_gt, colours, "segmentation: ground truth")
    _show_labels(axes[0, 2], seg, colours, "segmentation: direct")
    _show_labels(axes[0, 3], tseg, colours, "segmentation: transferred (depth->seg)")
    unit = f" [{depth_unit}]" if depth_unit else ""
    im = _show_depth(axes[1, 0], depth_gt, depth_mask, lo, hi,
                     "depth: ground truth (black: invalid)")
    _show_depth(axes[1, 1], depth, None, lo, hi, "depth: direct")
    _show_depth(axes[1, 2], tdepth, None, lo, hi, "depth: transferred (seg->depth)")
    fig.colorbar(im, ax=axes[1, :3].tolist(), shrink=0.9, label=f"depth{unit}")
    if depth is not None:
        err = np.abs(depth - depth_gt)
        err_hi = float(np.percentile(err[depth_mask], 99)) if depth_mask.any() else 1.0
        err_im = _show_depth(axes[1, 3], err, depth_mask, 0.0, max(err_hi, 1e-6),
                             "|direct - ground truth| (grey: no depth)", cmap=ERROR_CMAP,
                             invalid="lightgrey")
        fig.colorbar(err_im, ax=axes[1, 3], shrink=0.9, label=f"abs error{unit}")
    else:
        _show_depth(axes[1, 3], None, None, 0, 1, "depth error")
    handles = [matplotlib.patches.Patch(color=colours[i] / 255.0, label=name)
               for i, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 10),
               fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def iou_bar_chart(path: Path, class_names: Sequence[str], iou: Sequence[float | None],
                  title: str = "per-class IoU") -> Path:
    """Horizontal bars of per-class IoU (%) in the class colours, with the mIoU as a line.

    Classes without a value (never seen nor predicted) are labelled n/a.
    """
    colours = palette(class_names) / 255.0
    values = [np.nan if v is None else 100.0 * float(v) for v in iou]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(class_names) + 1.2), constrained_layout=True)
    rows = np.arange(len(class_names))
    ax.barh(rows, np.nan_to_num(values), color=colours, edgecolor="black", linewidth=0.5)
    for row, v in zip(rows, values, strict=True):
        ax.text((0 if np.isnan(v) else v) + 1, row, "n/a" if np.isnan(v) else f"{v:.1f}",
                va="center", fontsize=8)
    known = [v for v in values if not np.isnan(v)]
    if known:
        mean = float(np.mean(known))
        ax.axvline(mean, color="black", linestyle="--", linewidth=1,
                   label=f"mIoU {mean:.1f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(rows, labels=list(class_names))
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("IoU (%)")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
