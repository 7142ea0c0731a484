"""PNG figures of what a model sees: per-sample panels (a row per task) and a per-class IoU
bar chart.

Knows arrays only (no model, no engine, no tracker). Segmentation is drawn in the dataset's
palette, picked by class names (Cityscapes colours for Cityscapes names) with a fallback for
unknown names, so the same class always gets the same colour across figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xtask_mt.viz.colours import DEPTH_CMAP, ERROR_CMAP, value_range  # noqa: E402

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


@dataclass
class PanelRow:
    """One task of a sample: its ground truth (`truth`, valid where `valid`) and its
    predictions by name ("direct", and each transfer edge into it; None = not predicted).
    `kind` says how to draw it: class ids in the palette, values on one colour scale, unit
    vectors as RGB, or (`heat`) `truth` alone as a score map such as the energy."""

    task: str
    kind: Literal["labels", "map", "vector", "heat"]
    truth: np.ndarray
    valid: np.ndarray
    predictions: dict[str, np.ndarray | None] = field(default_factory=dict)
    unit: str = ""


def _not_predicted(ax: plt.Axes) -> None:
    ax.text(0.5, 0.5, "not predicted\nby this model", ha="center", va="center",
            transform=ax.transAxes, fontsize=8)


def _label_row(axes: Sequence[plt.Axes], row: PanelRow, colours: np.ndarray) -> None:
    cells = [("ground truth", np.where(row.valid, row.truth, -1)), *row.predictions.items()]
    for ax, (name, labels) in zip(axes, cells, strict=False):
        if _titled(ax, f"{row.task}: {name}", labels):
            ax.imshow(colourise(labels, colours), interpolation="nearest")


def _vector_row(fig: plt.Figure, axes: Sequence[plt.Axes], row: PanelRow) -> None:
    """Unit vectors as RGB of (n + 1) / 2; the direct prediction's angular error last."""
    cells = _cells(row)
    for ax, (name, values, valid) in zip(axes, cells, strict=False):
        if _titled(ax, f"{row.task}: {name}", values):
            rgb = (np.clip(values, -1.0, 1.0) + 1.0) / 2.0
            if valid is not None:
                rgb = np.where(valid[..., None], rgb, 0.0)
            ax.imshow(rgb, interpolation="nearest")
    direct = row.predictions.get("direct")
    ax = axes[len(cells)]
    if _titled(ax, f"angle(direct, ground truth) (grey: no {row.task})", direct):
        unit = direct / np.maximum(np.linalg.norm(direct, axis=-1, keepdims=True), 1e-6)
        cosine = np.clip((unit * row.truth).sum(-1), -1.0, 1.0)
        _error_image(fig, ax, row, np.degrees(np.arccos(cosine)), 90.0, "angular error [deg]")


def _cells(row: PanelRow) -> list[tuple[str, np.ndarray | None, np.ndarray | None]]:
    """(title, values, valid mask) of a row's cells: the ground truth, then each prediction."""
    return [("ground truth (black: invalid)", row.truth, row.valid), *(
        (name, values, None) for name, values in row.predictions.items())]


def _titled(ax: plt.Axes, title: str, values: np.ndarray | None) -> bool:
    """Title a cell; False, with the cell marked as not predicted, when there are no values
    to draw."""
    ax.set_title(title, fontsize=9)
    if values is None:
        _not_predicted(ax)
        return False
    return True


def _error_image(fig: plt.Figure, ax: plt.Axes, row: PanelRow, error: np.ndarray,
                 vmax: float, label: str) -> None:
    """A per-pixel error from 0 to `vmax`, grey where the row has no ground truth."""
    cm = plt.get_cmap(ERROR_CMAP).with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_where(~row.valid, error), cmap=cm, vmin=0.0, vmax=vmax,
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.9, label=label)


def _heat_row(fig: plt.Figure, ax: plt.Axes, row: PanelRow) -> None:
    """A per-pixel score with no ground truth (e.g. the consistency energy), on its own
    scale up to its 99th percentile."""
    ax.set_title(row.task, fontsize=9)
    hi = float(np.percentile(row.truth, 99)) if row.truth.size else 1.0
    image = ax.imshow(row.truth, cmap=ERROR_CMAP, vmin=0.0, vmax=max(hi, 1e-6),
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.9)


def _map_row(fig: plt.Figure, axes: Sequence[plt.Axes], row: PanelRow) -> None:
    """Ground truth and predictions on one colour scale; the direct error in the last cell."""
    lo, hi = value_range(row.truth, row.valid,
                         [d for d in row.predictions.values() if d is not None])
    unit = f" [{row.unit}]" if row.unit else ""
    cells = _cells(row)
    image = None
    for ax, (name, values, valid) in zip(axes, cells, strict=False):
        if _titled(ax, f"{row.task}: {name}", values):
            data = np.ma.masked_where(~valid, values) if valid is not None else values
            cmap = plt.get_cmap(DEPTH_CMAP).with_extremes(bad="black")
            image = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    fig.colorbar(image, ax=list(axes[:len(cells)]), shrink=0.9, label=f"{row.task}{unit}")
    direct = row.predictions.get("direct")
    ax = axes[len(cells)]
    if _titled(ax, f"|direct - ground truth| (grey: no {row.task})", direct):
        err = np.abs(direct - row.truth)
        err_hi = float(np.percentile(err[row.valid], 99)) if row.valid.any() else 1.0
        _error_image(fig, ax, row, err, max(err_hi, 1e-6), f"abs error{unit}")


def sample_panel(path: Path, image: np.ndarray, rows: Sequence[PanelRow],
                 class_names: Sequence[str], title: str = "") -> Path:
    """Write one sample's panel: the image, then a row per task with its ground truth, its
    direct and transferred predictions and, for value and vector maps, the direct error."""
    colours = palette(class_names)
    width = max([len(r.predictions) + 1 + (r.kind != "labels") for r in rows] + [1]) + 1
    fig, axes = plt.subplots(max(len(rows), 1), width, figsize=(3.5 * width, 2.6 * len(rows)),
                             constrained_layout=True, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(np.clip(image, 0, 1))
    axes[0, 0].set_title("image", fontsize=9)
    for r, row in enumerate(rows):
        if row.kind == "labels":
            _label_row(axes[r, 1:], row, colours)
        elif row.kind == "vector":
            _vector_row(fig, axes[r, 1:], row)
        elif row.kind == "heat":
            _heat_row(fig, axes[r, 1], row)
        else:
            _map_row(fig, axes[r, 1:], row)
    if any(row.kind == "labels" for row in rows):
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
