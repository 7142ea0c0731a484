"""TaskTransferNet: a small U-Net mapping one task's prediction to the other task."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xtask_mt.models.layers import conv_block, init_weights


class TaskTransferNet(nn.Module):
    """Three down blocks (64/128/256 channels, doubled when `wider`), three up blocks, 1x1 head."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = False,
                 wider: bool = False) -> None:
        super().__init__()
        widths = [c * (2 if wider else 1) for c in (64, 128, 256)]
        self.down = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.down.append(conv_block(prev, w, 2, batch_norm))
            prev = w
        # Up block i upsamples and fuses the skip of the matching down block.
        self.up = nn.ModuleList()
        for w, skip in zip(reversed(widths), reversed(widths), strict=True):
            self.up.append(conv_block(prev + skip, w, 2, batch_norm))
            prev = w
        self.head = nn.Conv2d(prev, out_channels, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(x, skip)  # upsampled map and skip, fused (see ConcatConv2d)
        return self.head(x)
