"""AdaMT-Net (Jha et al., CVPR-W 2020) as the akarimoon/xtask_mt baseline builds it.

A shared encoder of four (3x3 conv + BN + ReLU) x 2 blocks with dense downsampled skips (each
block also reads every earlier block's output, max-pooled to its resolution) and a 1x1
bottleneck to 1024 channels at 1/16 of the input; one decoder per task of four upsampling
blocks, each two (3x3 conv + BN + sigmoid) with a learnable attention weight, and a 1x1 output
conv without bias.

The attention weight of every decoder block is a parameter with one value per sample, channel
and pixel, shape (batch_size, channels, height / s, width / s) at that block's stride s, so
the model is tied to the batch size and input resolution it was built for (this is most of its
parameters: 31.5M of 49.1M for two tasks at batch 8, 128x256). As in the reference, a batch of
n < batch_size images (the last, partial batch of an evaluation) uses the first n rows of the
weight, so each image's output depends on its position in the batch. A batch larger than
`batch_size`, or an input of another height or width, raises AdaMTSizeError (a ValueError):
the model must be built for `dataset.batch_size` and `dataset.height` x `dataset.width`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from xtask_mt.errors import UserError

ENCODER_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
BOTTLENECK_WIDTH = 1024


class AdaMTSizeError(UserError, ValueError):
    """An input the batch- and resolution-sized attention weights cannot take."""


def _conv_bn(in_channels: int, out_channels: int, activation: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1),
                         nn.BatchNorm2d(out_channels), activation)


class AdaMTEncoder(nn.Module):
    """Shared trunk: four conv blocks, each fed the previous block's dropped-out and pooled
    output together with every earlier block's output pooled (without dropout) to its
    resolution, then a 1x1 bottleneck fed the same way.

    forward() returns [e1, e2, e3, e4, bottleneck] with `channels` (64, 128, 256, 512, 1024)
    at strides 1, 2, 4, 8 and 16: the four block outputs (the decoders' skips, taken before
    dropout) and, last, the bottleneck. Height and width must be multiples of 16.
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = ENCODER_WIDTHS,
                 bottleneck_width: int = BOTTLENECK_WIDTH) -> None:
        super().__init__()
        blocks = []
        for i, width in enumerate(widths):
            # the first block reads the image; later ones all earlier blocks (dense skips)
            block_in = sum(widths[:i]) if i else in_channels
            blocks.append(nn.Sequential(_conv_bn(block_in, width, nn.ReLU(inplace=True)),
                                        _conv_bn(width, width, nn.ReLU(inplace=True))))
        self.blocks = nn.ModuleList(blocks)
        self.bottleneck = nn.Conv2d(sum(widths), bottleneck_width, 1)
        self.dropout = nn.Dropout2d(p=0.5)
        self.channels: tuple[int, ...] = (*widths, bottleneck_width)

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The bottleneck conv's weight: where GradNorm measures task gradients."""
        return [self.bottleneck.weight]

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        stride = 2 ** len(self.blocks)
        if image.shape[-2] % stride or image.shape[-1] % stride:
            raise AdaMTSizeError(f"AdaMT-Net downsamples {stride}x: dataset.height and "
                                 f"dataset.width must be multiples of {stride}, got "
                                 f"{image.shape[-2]}x{image.shape[-1]}")
        first, *rest = self.blocks
        features = [first(image)]
        # every feature so far, newest first, undropped and pooled to the newest's resolution
        earlier = [features[0]]
        for stage in [*rest, self.bottleneck]:
            # pooled one level at a time (not 2**k at once), as the reference does, so that
            # max-pool breaks ties the same way
            pooled = [F.max_pool2d(f, 2) for f in earlier]
            newest = F.max_pool2d(self.dropout(earlier[0]), 2)
            features.append(stage(torch.cat([newest, *pooled[1:]], dim=1)))
            earlier = [features[-1], *pooled]
        return features


class AttentionUpBlock(nn.Module):
    """Upsample x2, concatenate the skip, two (conv + BN + sigmoid) giving l1 and l2; output
    dropout([l2, w * l1 * l2]) with `w` a learnt weight per sample, channel and pixel."""

    def __init__(self, in_channels: int, out_channels: int, batch_size: int, height: int,
                 width: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(in_channels, out_channels, nn.Sigmoid())
        self.conv2 = _conv_bn(out_channels, out_channels, nn.Sigmoid())
        self.attention = nn.Parameter(torch.rand(batch_size, out_channels, height, width))
        self.dropout = nn.Dropout2d(p=0.5)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        l1 = self.conv1(torch.cat([x, skip], dim=1))
        l2 = self.conv2(l1)
        attended = self.attention[:l1.shape[0]] * l1 * l2
        return self.dropout(torch.cat([l2, attended], dim=1))


class AdaMTDecoder(nn.Module):
    """One task's head: an AttentionUpBlock per skip, deepest first, each with half its skip's
    channels, then a 1x1 conv without bias to `out_channels`.

    forward(features) takes AdaMTEncoder's list and returns the raw prediction at input
    resolution: logits for segmentation, raw values for depth and normals. The reference puts no
    activation on segmentation or depth; it divides its normals by their L2 norm, which is left
    to the task here. A batch of n <= batch_size images uses the first n rows of the attention
    weights; more images or another resolution raise AdaMTSizeError.
    """

    def __init__(self, encoder_channels: tuple[int, ...], out_channels: int, batch_size: int,
                 height: int, width: int) -> None:
        super().__init__()
        *skips, bottleneck = encoder_channels
        stride = 2 ** len(skips)
        if batch_size < 1:
            raise AdaMTSizeError(f"AdaMT-Net needs dataset.batch_size >= 1, got {batch_size}")
        if height < stride or width < stride or height % stride or width % stride:
            raise AdaMTSizeError(f"AdaMT-Net downsamples {stride}x: dataset.height and "
                                 f"dataset.width must be positive multiples of {stride}, got "
                                 f"{height}x{width}")
        self.batch_size, self.height, self.width = batch_size, height, width
        blocks = []
        in_channels = bottleneck
        for level, skip in reversed(list(enumerate(skips))):
            half = skip // 2
            blocks.append(AttentionUpBlock(in_channels + skip, half, batch_size,
                                           height >> level, width >> level))
            in_channels = 2 * half  # l2 and the attended l2 side by side
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def _check_size(self, full_resolution: torch.Tensor) -> None:
        n, _, h, w = full_resolution.shape
        if (h, w) != (self.height, self.width):
            raise AdaMTSizeError(
                f"AdaMT-Net was built for {self.height}x{self.width} inputs (its attention "
                f"weights have one value per pixel) but got {h}x{w}: set dataset.height="
                f"{h} dataset.width={w}, or feed {self.height}x{self.width} images")
        if n > self.batch_size:
            raise AdaMTSizeError(
                f"AdaMT-Net was built for batches of at most {self.batch_size} images (its "
                f"attention weights have one row per sample) but got {n}: set "
                f"dataset.batch_size={n} when building it, or feed smaller batches")

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        *skips, x = features
        if len(skips) != len(self.blocks):
            raise ValueError(f"AdaMTDecoder expects {len(self.blocks) + 1} encoder feature "
                             f"maps, got {len(features)}")
        self._check_size(skips[0])
        for block, skip in zip(self.blocks, reversed(skips), strict=True):
            x = block(x, skip)
        return self.head(x)


def build_adamtnet(heads: Mapping[str, int], batch_size: int, height: int, width: int
                   ) -> tuple[AdaMTEncoder, dict[str, AdaMTDecoder]]:
    """The shared encoder and one decoder per task (in `heads` order, task -> output
    channels), their attention weights sized for `batch_size` images of `height` x `width`.

    Initialisation is PyTorch's default for convs and BN, attention weights uniform in [0, 1).
    """
    if not heads:
        raise ValueError("AdaMT-Net needs at least one task head")
    encoder = AdaMTEncoder()
    decoders = {task: AdaMTDecoder(encoder.channels, channels, batch_size, height, width)
                for task, channels in heads.items()}
    return encoder, decoders
