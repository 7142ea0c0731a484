"""Surface normals: a 3-channel head normalised to unit vectors per pixel, cosine or L1
losses, angular metrics; a horizontal flip negates the x component."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from xtask_mt.data.transforms import FieldRule
from xtask_mt.losses.normal import NORMAL_LOSSES, normal_loss
from xtask_mt.metrics.normal import NormalMetrics, angular_error
from xtask_mt.sample import unit_vectors, valid_normals
from xtask_mt.tasks.base import Batch, ConsistencyLoss, DirectLoss, Task

_MIRROR_X = np.array([-1.0, 1.0, 1.0], np.float32)


def _negate_x(normal: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The values of a mirrored normal map (HxWx3 array, or NxHxWx3 tensor on the device):
    the x component changes sign, y and z do not."""
    if isinstance(normal, torch.Tensor):  # no host array copied to the device
        return torch.cat((-normal[..., :1], normal[..., 1:]), dim=-1)
    return normal * _MIRROR_X


class Normal(Task):
    name = "normal"
    sample_keys = ("normal",)
    direct_losses = tuple(NORMAL_LOSSES)
    consistency_losses = tuple(NORMAL_LOSSES)
    headline_metrics = ("normal_mean", "normal_median", "normal_within_11", "normal_within_22",
                        "normal_within_30")
    draw = "vector"
    title = "surface normals (degrees)"
    report_rows = (("normal_mean", "mean angle", False), ("normal_median", "median angle", False),
                   ("normal_median_legacy", "median, legacy per-batch mean", False),
                   ("normal_within_11", "within 11.25 deg (%)", True),
                   ("normal_within_22", "within 22.5 deg (%)", True),
                   ("normal_within_30", "within 30 deg (%)", True))
    consistency_label = ("mean angle to direct (deg)", False)

    def out_channels(self, num_classes: int) -> int:
        return 3

    def head_activation(self, raw: torch.Tensor) -> torch.Tensor:
        """Unit vectors per pixel."""
        return unit_vectors(raw)

    def direct_loss(self, name: str) -> DirectLoss:
        if name not in NORMAL_LOSSES:
            raise ValueError(f"unknown normal loss {name!r}; choose one of "
                             f"{sorted(NORMAL_LOSSES)}")
        return lambda pred, batch: normal_loss(name, pred, batch["normal"],
                                               valid_normals(batch["normal"]))

    def consistency_loss(self, name: str, **options: Any) -> ConsistencyLoss:
        if name not in NORMAL_LOSSES:
            raise ValueError(f"unknown transferred normal loss {name!r}; choose one of "
                             f"{sorted(NORMAL_LOSSES)}")
        return lambda transferred, direct, batch: normal_loss(
            name, transferred, direct, valid_normals(batch["normal"]))

    def metrics(self, num_classes: int, device: torch.device | str,
                edges: Sequence[str]) -> NormalMetrics:
        return NormalMetrics(device, edges)

    @property
    def metric_directions(self) -> Mapping[str, bool]:
        return {**NormalMetrics.HIGHER_IS_BETTER,
                "consistency": NormalMetrics.CONSISTENCY_HIGHER_IS_BETTER}

    def field_rules(self, depth_scaling: str) -> dict[str, FieldRule]:
        return {"normal": FieldRule(flip_values=_negate_x)}  # a zoom keeps directions

    def disagreement(self, transferred: torch.Tensor, direct: torch.Tensor) -> torch.Tensor:
        """Angle in degrees between the transferred and the direct normals."""
        return angular_error(transferred, direct).float()

    def energy_term(self, transferred: torch.Tensor, direct: torch.Tensor) -> torch.Tensor:
        """1 - cosine of the angle between the transferred and the direct normals."""
        cosine = (unit_vectors(transferred.double(), 1e-12)
                  * unit_vectors(direct.double(), 1e-12)).sum(dim=1)
        return 1 - cosine.clamp(-1.0, 1.0)

    def image_errors(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean angle over each image's valid pixels (degrees)."""
        valid = valid_normals(batch["normal"])
        angle = angular_error(pred, batch["normal"]) * valid
        counts = valid.sum(dim=(1, 2)).double()
        return angle.sum(dim=(1, 2)) / counts.where(counts > 0, float("nan"))

    def prediction_map(self, pred: torch.Tensor) -> np.ndarray:
        """HxWx3 unit vectors (a transfer net's raw output normalised like the head's)."""
        return self.head_activation(pred.float()).permute(0, 2, 3, 1).cpu().numpy()

    def truth_map(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        normal = batch["normal"]
        return normal.permute(0, 2, 3, 1).cpu().numpy(), valid_normals(normal).cpu().numpy()
