"""The cross-task consistency model: shared encoder, per-task decoders, transfer nets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xtask_mt.models.decoder import UNetDecoder
from xtask_mt.models.encoder import ResNetEncoder
from xtask_mt.models.transfer import TaskTransferNet

TASKS: tuple[str, ...] = ("seg", "depth")


class CrossTaskModel(nn.Module):
    """Encoder + decoders for `tasks`; with `transfer` (and both tasks) also the two
    TaskTransferNets.

    forward() returns a dict with the direct predictions `seg` (N,C,H,W logits) and
    `depth` (N,1,H,W), and when transfer is on `tdepth` (seg->depth) and `tseg` (depth->seg).
    """

    def __init__(self, encoder: ResNetEncoder, num_classes: int, tasks: tuple[str, ...] = TASKS,
                 transfer: bool = True, transfer_batch_norm: bool = False,
                 transfer_wider: bool = False, decoder_width: int = 128) -> None:
        super().__init__()
        unknown = set(tasks) - set(TASKS)
        if unknown or not tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks}")
        if transfer and set(tasks) != set(TASKS):
            raise ValueError("transfer nets need both tasks")
        self.tasks = tuple(t for t in TASKS if t in tasks)
        self.num_classes = num_classes
        self.encoder = encoder
        self.decoders = nn.ModuleDict()
        if "seg" in self.tasks:
            self.decoders["seg"] = UNetDecoder(encoder.channels, num_classes, decoder_width)
        if "depth" in self.tasks:
            self.decoders["depth"] = UNetDecoder(encoder.channels, 1, decoder_width)
        self.transfer = transfer
        if transfer:
            self.seg_to_depth = TaskTransferNet(num_classes, 1, transfer_batch_norm,
                                                transfer_wider)
            self.depth_to_seg = TaskTransferNet(1, num_classes, transfer_batch_norm,
                                                transfer_wider)

    def forward(self, image: torch.Tensor, with_transfer: bool = True) -> dict[str, torch.Tensor]:
        features = self.encoder(image)
        out = {task: decoder(features) for task, decoder in self.decoders.items()}
        if self.transfer and with_transfer:
            # log-softmax in at least fp32, also under low-precision autocast
            seg = out["seg"]
            log_probs = F.log_softmax(seg, dim=1,
                                      dtype=torch.promote_types(seg.dtype, torch.float32))
            out["tdepth"] = self.seg_to_depth(log_probs)
            out["tseg"] = self.depth_to_seg(out["depth"])
        return out
