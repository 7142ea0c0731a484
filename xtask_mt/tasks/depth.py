"""Depth (or disparity): a 1-channel map, masked regression losses, error metrics; zooming
in during augmentation changes its values (see data.transforms.depth_scaling_for)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from xtask_mt.data.transforms import FieldRule, zoom_depth
from xtask_mt.losses.depth import (
    CONSISTENCY_LOSSES,
    DEPTH_LOSSES,
    direct_depth_loss,
    transferred_depth_loss,
)
from xtask_mt.metrics import DepthMetrics
from xtask_mt.tasks.base import Batch, ConsistencyLoss, DirectLoss, Task


class Depth(Task):
    name = "depth"
    sample_keys = ("depth", "depth_mask")
    direct_losses = tuple(DEPTH_LOSSES)
    consistency_losses = tuple(CONSISTENCY_LOSSES)
    headline_metrics = ("abs_err", "abs_rel")
    draw = "map"
    title = "depth"
    report_rows = (("abs_err", "abs error", False), ("abs_rel", "abs rel error", False),
                   ("rmse", "RMSE", False), ("delta1", "delta < 1.25 (%)", True),
                   ("delta2", "delta < 1.25^2 (%)", True), ("delta3", "delta < 1.25^3 (%)", True))
    in_dataset_unit = True
    consistency_label = ("mean |transferred - direct|", False)

    def out_channels(self, num_classes: int) -> int:
        return 1

    def direct_loss(self, name: str) -> DirectLoss:
        if name not in DEPTH_LOSSES:
            raise ValueError(f"unknown depth loss {name!r}; choose one of {sorted(DEPTH_LOSSES)}")
        return lambda pred, batch: direct_depth_loss(name, pred, batch["depth"],
                                                     batch["depth_mask"])

    def consistency_loss(self, name: str, **options: Any) -> ConsistencyLoss:
        if name not in CONSISTENCY_LOSSES:
            raise ValueError(f"unknown transferred depth loss {name!r}; choose one of "
                             f"{sorted(CONSISTENCY_LOSSES)}")
        return lambda transferred, direct, batch: transferred_depth_loss(
            name, transferred, direct, batch["depth_mask"])

    def metrics(self, num_classes: int, device: torch.device | str,
                edges: Sequence[str]) -> DepthMetrics:
        return DepthMetrics(device, edges)

    @property
    def metric_directions(self) -> Mapping[str, bool]:
        return {**DepthMetrics.HIGHER_IS_BETTER,
                "consistency": DepthMetrics.CONSISTENCY_HIGHER_IS_BETTER}

    def field_rules(self, depth_scaling: str) -> dict[str, FieldRule]:
        return {"depth": FieldRule(zoom=zoom_depth(depth_scaling))}

    def disagreement(self, transferred: torch.Tensor, direct: torch.Tensor) -> torch.Tensor:
        """Absolute difference of the depths."""
        return (transferred.float() - direct.float()).abs()[:, 0]

    def image_errors(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean absolute error over each image's valid depth pixels."""
        mask = batch["depth_mask"][:, 0]
        err = (pred.double()[:, 0] - batch["depth"].double()[:, 0]).abs() * mask
        counts = mask.sum(dim=(1, 2)).double()
        return err.sum(dim=(1, 2)) / counts.where(counts > 0, float("nan"))

    def prediction_map(self, pred: torch.Tensor) -> np.ndarray:
        return pred[:, 0].float().cpu().numpy()

    def truth_map(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        return batch["depth"][:, 0].cpu().numpy(), batch["depth_mask"][:, 0].cpu().numpy()
