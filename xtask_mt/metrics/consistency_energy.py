"""The seed's consistency energy of a set: how far the transferred predictions are from the
direct ones, one figure per transfer edge and their mean.

Each edge's figure is the mean over every pixel of the set of its target task's energy term
(see Task.energy_term: for segmentation KL(softmax(direct) || softmax(transferred)) summed
over the classes, for depth |transferred - direct|); `consistency_energy` is the mean of the
edges' figures, which for the seed's two edges is its 0.5 x seg term + 0.5 x depth term.
No ground truth is read, so every pixel counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from xtask_mt.metrics.sums import NamedSums

EnergyTerm = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(transferred, direct) -> (N, H, W) per-pixel disagreement"""

ENERGY_KEY = "consistency_energy"


class ConsistencyEnergy:
    """Sums of each edge's energy term; `edges` maps an edge name to (its target task,
    the target's energy term)."""

    HIGHER_IS_BETTER = False  # consistency_energy and energy_<edge>

    def __init__(self, edges: Mapping[str, tuple[str, EnergyTerm]],
                 device: torch.device | str = "cpu") -> None:
        self.edges = dict(edges)
        names = [f"{kind}_{edge}" for edge in self.edges for kind in ("energy", "pixels")]
        self.sums = NamedSums(names, device)

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.sums.values]

    @torch.no_grad()
    def update(self, out: Mapping[str, torch.Tensor]) -> None:
        """Add one batch of model outputs (edges it lacks, e.g. without transfer, are skipped)."""
        for edge, (target, term) in self.edges.items():
            if edge in out:
                values = term(out[edge], out[target])
                self.sums.add(f"energy_{edge}", values.double().sum())
                self.sums.add(f"pixels_{edge}", values.numel())

    def compute(self) -> dict[str, float]:
        """energy_<edge> per edge seen, and their mean as consistency_energy."""
        per_edge = {f"energy_{edge}": float(self.sums[f"energy_{edge}"] / pixels)
                    for edge in self.edges
                    if (pixels := float(self.sums[f"pixels_{edge}"])) > 0}
        if not per_edge:
            return {}
        return {**per_edge, ENERGY_KEY: sum(per_edge.values()) / len(per_edge)}
