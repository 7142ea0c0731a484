"""Named float64 sums kept in one tensor, so a whole accumulator is added across processes
with one all-reduce and read by name instead of by position."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class NamedSums:
    """Float64 sums addressed by name; `values` is the one tensor behind them."""

    def __init__(self, names: Sequence[str], device: torch.device | str = "cpu") -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"sum names must be unique, got {list(names)}")
        self.index = {name: i for i, name in enumerate(names)}
        self.values = torch.zeros(len(names), dtype=torch.float64, device=device)

    def add(self, name: str, value: torch.Tensor | float) -> None:
        self.values[self.index[name]] += value

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.values[self.index[name]]
