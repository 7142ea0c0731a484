"""Surface normal metrics over the valid pixels of a whole set: mean and median angular
error, and the share of pixels within 11.25, 22.5 and 30 degrees.

The median comes from a histogram of 0.01-degree bins (18000 over 0..180 degrees), so it is
exact to 0.01 degree in memory independent of the set's size, and sums over processes like
the other sums. `normal_median_legacy` is the mean of per-batch medians, as MTAN-derived code
reports it (it depends on the batch size and order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xtask_mt.metrics.sums import NamedSums
from xtask_mt.sample import unit_vectors, valid_normals

BIN_DEGREES = 0.01
_BINS = round(180 / BIN_DEGREES)
WITHIN = (11.25, 22.5, 30.0)


def angular_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, H, W) angle in degrees between (N, 3, H, W) vector maps (float64)."""
    cosine = (unit_vectors(pred.double(), 1e-12) * unit_vectors(target.double(), 1e-12)).sum(
        dim=1)
    return torch.rad2deg(torch.acos(cosine.clamp(-1.0, 1.0)))


class NormalMetrics:
    """Angular error sums and histogram; per incoming edge the mean angle between the
    transferred and the direct normals."""

    HIGHER_IS_BETTER = {"normal_mean": False, "normal_median": False,
                        "normal_median_legacy": False, "normal_within_11": True,
                        "normal_within_22": True, "normal_within_30": True}
    CONSISTENCY_HIGHER_IS_BETTER = False  # consistency_<edge>: mean angle in degrees

    def __init__(self, device: torch.device | str = "cpu", edges: Sequence[str] = ()) -> None:
        self.edges = tuple(edges)
        names = ["angle", "pixels", "within_11", "within_22", "within_30", "batch_medians",
                 "batches"]
        for edge in self.edges:
            names += [f"transfer_{edge}", f"pixels_{edge}"]
        self.sums = NamedSums(names, device)
        self.histogram = torch.zeros(_BINS, dtype=torch.int64, device=device)

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.sums.values, self.histogram]

    @torch.no_grad()
    def update(self, pred: torch.Tensor, batch: Mapping[str, torch.Tensor],
               transferred: Mapping[str, torch.Tensor]) -> None:
        target = batch["normal"]
        valid = valid_normals(target)
        angle = angular_error(pred, target)
        errors = angle[valid]
        s = self.sums
        s.add("angle", errors.sum())
        s.add("pixels", errors.numel())
        for key, limit in zip(("within_11", "within_22", "within_30"), WITHIN, strict=True):
            s.add(key, (errors < limit).sum())
        self.histogram += torch.bincount(
            (errors / BIN_DEGREES).long().clamp_(max=_BINS - 1), minlength=_BINS)
        if errors.numel():
            s.add("batch_medians", errors.median())
            s.add("batches", 1)
        for edge, other in transferred.items():
            s.add(f"transfer_{edge}", angular_error(other, pred)[valid].sum())
            s.add(f"pixels_{edge}", errors.numel())

    def _median(self) -> float:
        """The lower median's bin, read at its centre (within 0.005 degree of the exact)."""
        n = int(self.histogram.sum())
        rank = (n - 1) // 2  # the lower median, as torch.median gives
        index = int(torch.searchsorted(self.histogram.cumsum(0), rank, right=True))
        return (index + 0.5) * BIN_DEGREES

    def compute(self) -> dict[str, float]:
        s = self.sums
        n = float(s["pixels"])
        if n == 0:
            return {}
        result = {"normal_mean": float(s["angle"]) / n, "normal_median": self._median()}
        for key in ("within_11", "within_22", "within_30"):
            result[f"normal_{key}"] = float(s[key]) / n
        if s["batches"] > 0:
            result["normal_median_legacy"] = float(s["batch_medians"] / s["batches"])
        for edge in self.edges:
            pixels = s[f"pixels_{edge}"]
            if pixels > 0:
                result[f"consistency_{edge}"] = float(s[f"transfer_{edge}"] / pixels)
        return result
