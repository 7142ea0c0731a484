"""Depth metrics over valid pixels, in the target's own unit, accumulated over a set.

abs error, abs relative error, RMSE and the share of pixels with max(p/t, t/p) below
1.25^k; consistency: the mean |transferred - direct| depth of each incoming edge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from xtask_mt.metrics.sums import NamedSums

DELTA_THRESHOLDS = (1.25, 1.25**2, 1.25**3)
_EPS = 1e-6  # predictions are floored here before the delta ratio


class DepthMetrics:
    """Error sums over the valid pixels of `batch["depth"]` (`batch["depth_mask"]`)."""

    HIGHER_IS_BETTER = {"abs_err": False, "abs_rel": False, "rmse": False, "delta1": True,
                        "delta2": True, "delta3": True}
    CONSISTENCY_HIGHER_IS_BETTER = False  # consistency_<edge>: mean |transferred - direct|

    def __init__(self, device: torch.device | str = "cpu", edges: Sequence[str] = ()) -> None:
        self.edges = tuple(edges)
        names = ["abs", "abs_rel", "squared", "delta1", "delta2", "delta3", "pixels"]
        for edge in self.edges:
            names += [f"transfer_{edge}", f"pixels_{edge}"]
        self.sums = NamedSums(names, device)

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.sums.values]

    @torch.no_grad()
    def update(self, pred: torch.Tensor, batch: Mapping[str, torch.Tensor],
               transferred: Mapping[str, torch.Tensor]) -> None:
        """Float64 per pixel. Masks multiply instead of indexing, so no step waits for the
        host to learn how many pixels are valid; invalid pixels get target 1 and zero error,
        and a ratio above every threshold."""
        p = pred.double().flatten()
        valid = batch["depth_mask"].flatten()
        t = torch.where(valid, batch["depth"].double().flatten(), 1.0)
        err = (p - t).abs_().mul_(valid)
        quotient = p.clamp(min=_EPS).div_(t)
        ratio = torch.maximum(quotient, quotient.reciprocal())
        ratio.masked_fill_(~valid, float("inf"))
        s = self.sums
        s.add("abs", err.sum())
        s.add("abs_rel", torch.dot(err, t.reciprocal_()))
        s.add("squared", torch.dot(err, err))
        for k, threshold in enumerate(DELTA_THRESHOLDS):
            s.add(f"delta{k + 1}", torch.count_nonzero(ratio < threshold))
        pixels = valid.count_nonzero()
        s.add("pixels", pixels)
        for edge, other in transferred.items():
            s.add(f"transfer_{edge}", (other.double().flatten() - p).abs_().mul_(valid).sum())
            s.add(f"pixels_{edge}", pixels)

    def compute(self) -> dict[str, float]:
        s = self.sums
        n = s["pixels"]
        if n == 0:
            return {}
        result = {"abs_err": float(s["abs"] / n), "abs_rel": float(s["abs_rel"] / n),
                  "rmse": float(torch.sqrt(s["squared"] / n))}
        for k in range(1, 4):
            result[f"delta{k}"] = float(s[f"delta{k}"] / n)
        for edge in self.edges:
            pixels = s[f"pixels_{edge}"]
            if pixels > 0:
                result[f"consistency_{edge}"] = float(s[f"transfer_{edge}"] / pixels)
        return result
