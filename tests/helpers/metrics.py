"""The metric accumulators of the default (seed) model, as training builds them."""

from __future__ import annotations

import torch

from helpers.config import compose_config
from xtask_mt.config.build import build_metrics
from xtask_mt.metrics import MetricCollection


def seed_metrics(num_classes: int, device: torch.device | str = "cpu") -> MetricCollection:
    """seg and depth accumulators, told of the edges depth_to_seg and seg_to_depth."""
    return build_metrics(compose_config([]), num_classes, device)
