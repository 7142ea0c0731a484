"""Predictions on the first validation batch, rendered for a tracker to show."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from xtask_mt.engine.loops import to_device
from xtask_mt.visuals import SamplePreview, sample_previews


@torch.no_grad()
def validation_previews(model: nn.Module, loader: Iterable, num_classes: int,
                        device: torch.device, count: int) -> list[SamplePreview]:
    """Previews of the first `count` samples of `loader` (the same ones every epoch, since the
    validation loader does not shuffle)."""
    if count <= 0:
        return []
    model.eval()
    batch = to_device(next(iter(loader)), device)
    return sample_previews(batch, model(batch["image"]), num_classes, count)
