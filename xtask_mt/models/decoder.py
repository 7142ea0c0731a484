"""U-Net style decoder: per encoder map a (3x conv+BN+ReLU, upsample) block with its skip."""

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
    """Decodes the encoder's maps back to input resolution with `out_channels` outputs.

    One block per encoder map, deepest first: the first reads the deepest map, each next one
    the previous block's output concatenated with the next shallower map; after each block a
    bilinear upsampling to that map's stride (x2 for each ResNet level) and, after the last,
    from the shallowest stride to the input's. `encoder_strides` are the maps' strides,
    shallowest first (timm's feature_info reductions; the ResNet's by default). Each
    upsampling uses `align_corners`: True as in the method's network, False as this project's
    decoders did before (`model.decoder_align_corners=false`). `bias` places the biases
    (see DECODER_BIASES).
    """

    def __init__(self, encoder_channels: tuple[int, ...], out_channels: int,
                 width: int = 128, align_corners: bool = True,
                 encoder_strides: tuple[int, ...] = (2, 4, 8, 16, 32),
                 bias: str = "seed") -> None:
        super().__init__()
        self.align_corners = align_corners
        if bias not in DECODER_BIASES:
            raise ValueError(f"decoder bias {bias!r} is not one of {DECODER_BIASES}")
        if len(encoder_channels) != len(encoder_strides) or not encoder_channels:
            raise ValueError(f"UNetDecoder got {len(encoder_channels)} channel counts for "
                             f"{len(encoder_strides)} strides; give one of each per encoder map")
        # (stride of a level, stride of the next shallower one, the input's for the first)
        steps = list(zip(encoder_strides, (1, *encoder_strides[:-1]), strict=True))
        if any(deep < shallow or deep % shallow for deep, shallow in steps):
            raise ValueError(f"UNetDecoder needs encoder strides that grow by whole factors, "
                             f"got {tuple(encoder_strides)}")
        # after the block at each level (deepest first), upsample to the next shallower stride
        self.scales = tuple(deep // shallow for deep, shallow in reversed(steps))
        deepest_first = list(reversed(encoder_channels))  # e.g. layer4, layer3, ..., stem
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
        for i, (block, scale) in enumerate(zip(self.blocks, self.scales, strict=True)):
            x = block(x, deepest_first[i]) if i > 0 else block(x)  # skip fused, not copied
            if scale > 1:
                x = F.interpolate(x, scale_factor=scale, mode="bilinear",
                                  align_corners=self.align_corners)
        return self.head(x)
