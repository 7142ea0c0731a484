"""The multi-task model: a shared encoder, one decoder per task, one transfer net per edge.

The model knows no task: it is given each head's channels and each edge's channels and
input transform (the task registry supplies them, see config.build).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from xtask_mt.models.decoder import UNetDecoder
from xtask_mt.models.encoder import ResNetEncoder
from xtask_mt.models.transfer import TaskTransferNet


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
    """Encoder + a U-Net decoder per head (its output passed through the head's activation,
    if it has one) + a TaskTransferNet per edge.

    forward() returns a dict: each head's direct prediction under its task name and, unless
    `with_transfer=False`, each edge's transferred prediction under the edge name. Decoders
    are `decoders.<task>` and transfer nets `<edge name>` in the state dict.
    """

    def __init__(self, encoder: ResNetEncoder, heads: Mapping[str, int],
                 edges: Sequence[TransferEdge] = (), transfer_batch_norm: bool = False,
                 transfer_wider: bool = False, decoder_width: int = 128,
                 activations: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None
                 ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("the model needs at least one task head")
        for edge in edges:
            missing = {edge.source, edge.target} - set(heads)
            if missing:
                raise ValueError(f"transfer edge {edge.name} needs the heads {sorted(missing)}, "
                                 f"which the model lacks (tasks {list(heads)})")
        self.tasks = tuple(heads)
        self.activations = dict(activations or {})  # per head, e.g. unit vectors for normals
        self.encoder = encoder
        self.decoders = nn.ModuleDict({task: UNetDecoder(encoder.channels, channels,
                                                         decoder_width)
                                       for task, channels in heads.items()})
        self.edges = tuple(edges)
        for edge in self.edges:
            self.add_module(edge.name, TaskTransferNet(edge.in_channels, edge.out_channels,
                                                       transfer_batch_norm, transfer_wider))

    def forward(self, image: torch.Tensor, with_transfer: bool = True) -> dict[str, torch.Tensor]:
        features = self.encoder(image)
        out = {task: decoder(features) for task, decoder in self.decoders.items()}
        for task, activation in self.activations.items():
            out[task] = activation(out[task])
        if with_transfer:
            for edge in self.edges:
                out[edge.name] = getattr(self, edge.name)(edge.prepare(out[edge.source]))
        return out
