"""Consistency energy (the idea of Zamir et al., CVPR 2020, "Robust learning through
cross-task consistency"): per pixel, the sum over the transfer edges of the disagreement
between each transferred prediction and the direct prediction of its target task, each edge
divided by its mean disagreement over the training set. It needs no ground truth; per image
(its mean over the pixels) it predicts where the model errs, which the Spearman correlation
with each task's per-image error measures."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from xtask_mt.runtime.precision import StepOptions
from xtask_mt.sample import to_device
from xtask_mt.tasks import get_task


def _disagreements(model: nn.Module, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """(N, H, W) disagreement of each edge of `model` in its outputs `out`."""
    return {edge.name: get_task(edge.target).disagreement(out[edge.name], out[edge.target])
            for edge in model.edges}


@torch.no_grad()
def edge_means(model: nn.Module, loader: Iterable, options: StepOptions,
               progress_bar: bool = True) -> dict[str, float]:
    """Mean disagreement of each edge over `loader` (the training split), the normalisers."""
    model.eval()
    sums: dict[str, float] = {}
    pixels = 0
    for batch in tqdm(loader, desc="energy normalisers", leave=False, disable=not progress_bar):
        batch = to_device(batch, options.device)
        with options.autocast():
            out = model(options.image(batch["image"]))
        for edge, values in _disagreements(model, out).items():
            sums[edge] = sums.get(edge, 0.0) + float(values.double().sum())
        pixels += batch["image"].shape[0] * batch["image"].shape[-2] * batch["image"].shape[-1]
    return {edge: total / max(pixels, 1) for edge, total in sums.items()}


def energy_map(model: nn.Module, out: dict[str, torch.Tensor],
               normalisers: dict[str, float]) -> torch.Tensor:
    """(N, H, W) energy: the edges' disagreements, each over its normaliser, summed."""
    terms = [values / max(normalisers[edge], 1e-12)
             for edge, values in _disagreements(model, out).items()]
    return torch.stack(terms).sum(dim=0)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, tied values sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, ranks) / counts)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of the pairs where both are finite (NaN if < 3 pairs or
    one side is constant)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return float("nan")
    rx, ry = _ranks(x[keep]), _ranks(y[keep])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")
