"""Transfer nets: small encoder-decoders mapping one task's prediction to another task.

`TaskTransferNet` is the method's own network (the default); `UNetTransferNet` is the
textbook U-Net this project used before (about 1.9x the parameters), kept as
`model.transfer.arch=unet` so runs made with it can be resumed and evaluated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xtask_mt.models.layers import conv_block, init_weights


def _widths(wider: bool) -> tuple[int, int, int]:
    factor = 2 if wider else 1
    return 64 * factor, 128 * factor, 256 * factor


class _UpBlock(nn.Module):
    """x2 bilinear upsampling (align_corners=True) of its inputs, then two 3x3 convs [+ BN]
    + ReLU over their concatenation. Upsampling each input equals upsampling the
    concatenation (it acts per channel), and ConcatConv2d spares the concatenated copy."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.convs = conv_block(in_channels, out_channels, 2, batch_norm, bias=True)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.convs(*(F.interpolate(x, scale_factor=2, mode="bilinear",
                                          align_corners=True) for x in inputs))


class TaskTransferNet(nn.Module):
    """The method's transfer net: three down blocks (two 3x3 convs [+ BN] + ReLU, then a
    2x2 max-pool; 64/128/256 channels, doubled when `wider`) and three up blocks (x2
    bilinear upsampling with align_corners=True, then two 3x3 convs [+ BN] + ReLU), and a
    1x1 convolution without bias.

    The skips are the *pooled* outputs of down blocks 1 and 2: up block 1 reads the
    bottom (256 channels at 1/8) alone and returns 128 channels at 1/4; up block 2 reads
    that with pooled down block 2 (256 channels at 1/4) and returns 64 at 1/2; up block 3
    reads that with pooled down block 1 (128 channels at 1/2) and returns 64 at full size.
    Convolutions keep their bias also with BN, as in the method's network.
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = False,
                 wider: bool = False) -> None:
        super().__init__()
        w1, w2, w3 = _widths(wider)
        self.down = nn.ModuleList([conv_block(in_channels, w1, 2, batch_norm, bias=True),
                                   conv_block(w1, w2, 2, batch_norm, bias=True),
                                   conv_block(w2, w3, 2, batch_norm, bias=True)])
        self.up = nn.ModuleList([_UpBlock(w3, w2, batch_norm), _UpBlock(w2 + w2, w1, batch_norm),
                                 _UpBlock(w1 + w1, w1, batch_norm)])
        self.head = nn.Conv2d(w1, out_channels, 1, bias=False)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for block in self.down:
            x = F.max_pool2d(block(x), 2)
            pooled.append(x)
        x = self.up[0](x)
        for block, skip in zip(self.up[1:], (pooled[1], pooled[0]), strict=True):
            x = block(x, skip)
        return self.head(x)


class UNetTransferNet(nn.Module):
    """A textbook U-Net: three down blocks (64/128/256 channels, doubled when `wider`),
    each fused back at its own resolution by the up block of the same width; 1x1 head."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = False,
                 wider: bool = False) -> None:
        super().__init__()
        widths = _widths(wider)
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


TRANSFER_ARCHS: dict[str, type[nn.Module]] = {"seed": TaskTransferNet,
                                              "unet": UNetTransferNet}
