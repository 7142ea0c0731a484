"""Validation samples as plain arrays for a tracker to show: the input image and, per task,
its direct, transferred and ground-truth maps, drawn as the task registry says (class maps
with a void id, or colour-mapped values). Trackers turn these into their own image types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from xtask_mt.sample import denormalise_image, to_device
from xtask_mt.tasks import get_task
from xtask_mt.viz.colours import colour_values, value_range


@dataclass
class TaskPreview:
    """One task of one sample: `layers` by name (direct, an edge name, ground_truth); HxW
    class ids (unlabelled = the sample's void id) or HxWx3 uint8 colour images. A `map`
    has its value range (`scale`: the values at the bright and the dark end of
    viz.colours.DEPTH_CMAP) so a tracker can show it."""

    kind: Literal["labels", "map", "vector"]
    layers: dict[str, np.ndarray]
    scale: tuple[float, float] | None = None


@dataclass
class SamplePreview:
    """One validation sample: RGB uint8 image and its tasks' previews."""

    image: np.ndarray
    tasks: dict[str, TaskPreview]
    void_id: int


def vector_rgb(vectors: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """HxWx3 unit vectors -> HxWx3 uint8 RGB of (n + 1) / 2 (invalid pixels black)."""
    rgb = np.round((np.clip(vectors, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    if valid is not None:
        rgb[~valid] = 0
    return rgb


def _task_preview(task: str, outputs: Mapping[str, torch.Tensor],
                  batch: Mapping[str, torch.Tensor], edges: Sequence[str], i: int,
                  void_id: int) -> TaskPreview:
    """Direct, transferred (each edge into `task`) and ground truth of sample `i`, all maps
    on one range (viz.colours.value_range, as evaluate.py's panels) so their colours compare."""
    spec = get_task(task)
    preds = {"direct": outputs[task][i:i + 1]} if task in outputs else {}
    preds.update({edge: outputs[edge][i:i + 1] for edge in edges if edge in outputs})
    layers = {name: spec.prediction_map(pred)[0] for name, pred in preds.items()}
    truth, valid = (x[i] for x in spec.truth_map(batch))
    if spec.draw == "labels":
        layers = {name: m.astype(np.int64) for name, m in layers.items()}
        layers["ground_truth"] = np.where(valid, truth, void_id).astype(np.int64)
        return TaskPreview("labels", layers)
    if spec.draw == "vector":
        layers = {name: vector_rgb(m) for name, m in layers.items()}
        layers["ground_truth"] = vector_rgb(truth, valid)
        return TaskPreview("vector", layers)
    lo, hi = value_range(truth, valid, layers.values())
    layers = {name: colour_values(m, lo, hi) for name, m in layers.items()}
    layers["ground_truth"] = colour_values(truth, lo, hi, valid)
    return TaskPreview("map", layers, (lo, hi))


def sample_previews(batch: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor],
                    model: nn.Module, num_classes: int, count: int) -> list[SamplePreview]:
    """Previews of the first `count` samples of `batch` with `model`'s `outputs`."""
    incoming: dict[str, list[str]] = {}
    for edge in getattr(model, "edges", ()):
        incoming.setdefault(edge.target, []).append(edge.name)
    previews = []
    for i in range(min(count, batch["image"].shape[0])):
        image = np.round(denormalise_image(batch["image"][i]) * 255).astype(np.uint8)
        tasks = {task: _task_preview(task, outputs, batch, incoming.get(task, ()), i,
                                     num_classes) for task in model.tasks}
        previews.append(SamplePreview(image=image, tasks=tasks, void_id=num_classes))
    return previews


@torch.no_grad()
def validation_previews(model: nn.Module, loader: Iterable, device: torch.device,
                        num_classes: int, count: int) -> list[SamplePreview]:
    """Previews of the first `count` samples of `loader` (the same ones every epoch, since the
    validation loader does not shuffle)."""
    if count <= 0:
        return []
    model.eval()
    batch = to_device(next(iter(loader)), device)
    return sample_previews(batch, model(batch["image"]), model, num_classes, count)
