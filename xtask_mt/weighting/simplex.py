"""Euclidean projection onto the probability simplex, for methods that keep task weights on it
(MoCo, SDMGrad)."""

from __future__ import annotations

import torch


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """The point w >= 0 with sum(w) = 1 nearest to v (K,): w = max(v - theta, 0), theta from
    the sorted entries (Held, Wolfe and Crowder 1974). Device operations only, no host sync."""
    u = torch.sort(v, descending=True).values
    shifted = u.cumsum(0) - 1
    k = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    count = (u - shifted / k > 0).sum()  # the condition holds for a prefix of u
    theta = shifted.gather(0, (count - 1).view(1)) / count
    return (v - theta).clamp(min=0)
