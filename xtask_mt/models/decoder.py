"""U-Net style decoder: five (3x conv+BN+ReLU, x2 upsample) blocks with encoder skips."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xtask_mt.models.layers import conv_block, init_weights

DECODER_BIASES = ("seed", "head")
"""Where a decoder's biases are: `seed` in every 3x3 convolution (before its BN) and none in
the 1x1 output convolution, as the method's network; `head` in the 1x1 output convolution
only, as this project's decoders had before (3,832 fewer parameters for two 7-class tasks)."""


class UNetDecoder(nn.Module):
    """Decodes the five encoder maps back to input resolution with `out_channels` outputs.

    Each x2 bilinear upsampling uses `align_corners`: True as in the method's network,
    False as this project's decoders did before (`model.decoder_align_corners=false`).
    `bias` places the biases (see DECODER_BIASES).
    """

    def __init__(self, encoder_channels: tuple[int, ...], out_channels: int,
                 width: int = 128, align_corners: bool = True, bias: str = "seed") -> None:
        super().__init__()
        self.align_corners = align_corners
        if len(encoder_channels) != 5:
            raise ValueError("UNetDecoder expects five encoder feature maps")
        if bias not in DECODER_BIASES:
            raise ValueError(f"decoder bias {bias!r} is not one of {DECODER_BIASES}")
        deepest_first = list(reversed(encoder_channels))  # layer4, layer3, ..., stem
        conv_bias = bias == "seed"
        blocks = [conv_block(deepest_first[0], width, 3, batch_norm=True, bias=conv_bias)]
        blocks += [conv_block(width + skip, width, 3, batch_norm=True, bias=conv_bias)
                   for skip in deepest_first[1:]]
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(width, out_channels, 1, bias=not conv_bias)
        init_weights(self)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        deepest_first = features[::-1]
        x = deepest_first[0]
        for i, block in enumerate(self.blocks):
            x = block(x, deepest_first[i]) if i > 0 else block(x)  # skip fused, not copied
            x = F.interpolate(x, scale_factor=2, mode="bilinear",
                              align_corners=self.align_corners)
        return self.head(x)
