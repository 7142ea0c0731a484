"""Masked reductions that never divide by zero."""

from __future__ import annotations

import torch


def masked_mean_per_image(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over `mask` within each image, then over the images that have any
    valid pixel. Images without valid pixels are left out; if none has any, the result is a
    zero that still carries the graph, so backward works and adds nothing.
    """
    mask = mask.to(values.dtype)
    dims = tuple(range(1, values.dim()))
    count = mask.sum(dim=dims)
    per_image = (values * mask).sum(dim=dims) / count.clamp(min=1.0)
    has_pixels = count > 0
    n_images = has_pixels.sum()
    return (per_image * has_pixels).sum() / n_images.clamp(min=1).to(values.dtype)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over all masked pixels of the batch; zero (with graph) if none."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)
