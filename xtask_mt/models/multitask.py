"""The multi-task model: a shared trunk, one head per task, one transfer net per edge.

The model knows no task and no architecture: it is given the trunk (`encoder`, which
returns the list of feature maps the heads read), the heads (`decoders`, one per task) and
each edge's channels and input transform (config.build puts them together from the task
registry and the architecture registry).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

TransferFactory = Callable[[int, int], nn.Module]
"""(in_channels, out_channels) -> a transfer net"""


@dataclass(frozen=True)
class TransferEdge:
    """A transfer net from task `source` to task `target`, fed `prepare(source output)`."""

    name: str
    source: str
    target: str
    in_channels: int
    out_channels: int
    prepare: Callable[[torch.Tensor], torch.Tensor]


class CrossTaskModel(nn.Module):
    """Trunk + a head per task (its output passed through the task's activation, if it
    has one) + a transfer net per edge.

    The trunk must return a list of tensors and have `last_shared_parameters()`; the heads
    read the trunk's computation only through that list, so that the trunk's parameters are
    the shared ones and a gradient taken at the listed tensors is the heads' (see
    weighting.encoder_features; MTAN's heads also apply trunk-owned attention blocks, whose
    gradient does not pass through the list). forward() returns a dict: each head's direct
    prediction under its task name and, unless `with_transfer=False`, each edge's transferred
    prediction under the edge name. State-dict names: `encoder.*`, `decoders.<task>.*`,
    `<edge name>.*`.
    """

    def __init__(self, encoder: nn.Module, decoders: Mapping[str, nn.Module],
                 edges: Sequence[TransferEdge] = (),
                 transfer_net: TransferFactory | None = None,
                 activations: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None
                 ) -> None:
        super().__init__()
        if not decoders:
            raise ValueError("the model needs at least one task head")
        for edge in edges:
            missing = {edge.source, edge.target} - set(decoders)
            if missing:
                raise ValueError(f"transfer edge {edge.name} needs the heads {sorted(missing)}, "
                                 f"which the model lacks (tasks {list(decoders)})")
        if edges and transfer_net is None:
            raise ValueError("transfer edges need a transfer_net factory")
        self.tasks = tuple(decoders)
        self.activations = dict(activations or {})  # per head, e.g. unit vectors for normals
        self.encoder = encoder
        self.decoders = nn.ModuleDict(dict(decoders))
        self.edges = tuple(edges)
        for edge in self.edges:
            self.add_module(edge.name, transfer_net(edge.in_channels, edge.out_channels))

    def forward(self, image: torch.Tensor, with_transfer: bool = True) -> dict[str, torch.Tensor]:
        features = self.encoder(image)
        out = {task: decoder(features) for task, decoder in self.decoders.items()}
        for task, activation in self.activations.items():
            out[task] = activation(out[task])
        if with_transfer:
            for edge in self.edges:
                out[edge.name] = getattr(self, edge.name)(edge.prepare(out[edge.source]))
        return out
