"""SegNet-MTAN (Liu, Johns, Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019)
split into a shared trunk and one attention head per task.

The trunk is the shared SegNet: five encoder stages (a first 3x3 conv+BN+ReLU block, then one
more such block in the first two stages and two in the last three, then 2x2 max pooling that
keeps its indices) and five mirrored decoder stages (max unpooling with those indices, then the
same conv blocks). Each task's head is its attention branch: at every stage a 1x1 attention
mask, computed from the shared features and the branch's own previous output, multiplies the
stage's shared output; a 3x3 conv block then carries the masked map to the next stage, and a
3x3 + 1x1 conv layer predicts the task at the input resolution.

Those per-stage 3x3 conv blocks of the attention branches (one per encoder stage and one per
decoder stage) are a single set shared by all tasks in the reference implementation. Here the
trunk owns them, so their parameters count once, appear once in the state dict and are among
the shared (encoder) parameters that gradient weightings work on; the heads only apply them.

Feature order of `MTANTrunk.forward` (20 maps; stage s of the encoder works at 1/2**s of the
input size, stage s of the decoder at 1/2**(4 - s)):

- ``2 * s`` (s = 0..4): encoder stage s after its first conv block;
- ``2 * s + 1``: encoder stage s's output, before pooling; index 9 is the deepest encoder
  feature (512 channels, 1/16 of the input size);
- ``10 + 2 * s`` (s = 0..4, deepest first): decoder stage s's input, just unpooled;
- ``11 + 2 * s``: decoder stage s's output; index 19 is the last decoder feature (64 channels,
  full resolution).

The reference's task-uncertainty log-variances (`logsigma`) are not part of the model: task
weighting lives outside it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from xtask_mt.models.layers import init_weights

_WIDTHS = (64, 128, 256, 512, 512)  # channels of the encoder stages, shallowest first
_STAGES = len(_WIDTHS)
_DOWNSCALE = 2**_STAGES  # every stage pools by 2, the deepest down to 1/32


def _conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3 conv (with bias, as in the reference) + BN + ReLU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


def _convs(channels: int, count: int) -> nn.Sequential:
    """`count` 3x3 conv blocks that keep the channel count."""
    return nn.Sequential(*(_conv(channels, channels) for _ in range(count)))


def _attention(in_ch: int, out_ch: int) -> nn.Sequential:
    """The attention mask: 1x1 conv + BN + ReLU, 1x1 conv + BN + sigmoid."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True), nn.Conv2d(out_ch, out_ch, 1),
                         nn.BatchNorm2d(out_ch), nn.Sigmoid())


class MTANTrunk(nn.Module):
    """The shared SegNet plus the attention branches' shared conv blocks (applied by the heads).

    `channels` gives the channels of each map `forward` returns, in the order of the module
    docstring.
    """

    def __init__(self) -> None:
        super().__init__()
        w = _WIDTHS
        extra_convs = (1, 1, 2, 2, 2)  # conv blocks after each stage's first one
        self.encoder_first = nn.ModuleList(
            _conv(c_in, c_out) for c_in, c_out in zip((3, *w[:-1]), w, strict=True))
        self.encoder_rest = nn.ModuleList(
            _convs(c, n) for c, n in zip(w, extra_convs, strict=True))
        # decoder stage s mirrors encoder stage 4 - s: w[4-s] channels in, w[3-s] (64 last) out
        dec_in = w[::-1]
        dec_out = (*w[-2::-1], w[0])
        self.decoder_first = nn.ModuleList(
            _conv(c_in, c_out) for c_in, c_out in zip(dec_in, dec_out, strict=True))
        self.decoder_rest = nn.ModuleList(
            _convs(c, n) for c, n in zip(dec_out, extra_convs[::-1], strict=True))
        # shared attention blocks: encoder stage s maps its w[s] masked channels to the next
        # stage's width; decoder stage s maps the previous attention output to the stage's width
        self.encoder_att_blocks = nn.ModuleList(
            _conv(c_in, c_out) for c_in, c_out in zip(w, (*w[1:], w[-1]), strict=True))
        self.decoder_att_blocks = nn.ModuleList(
            _conv(c_in, c_out) for c_in, c_out in zip((w[-1], *dec_out[:-1]), dec_out,
                                                      strict=True))
        self.channels: tuple[int, ...] = (
            *(c for c in w for _ in range(2)),
            *(c for pair in zip(dec_in, dec_out, strict=True) for c in pair))
        init_weights(self)

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The weight of the SegNet's last conv, whose output (feature 19) every task masks:
        where GradNorm measures task gradients."""
        last_conv = self.decoder_rest[-1][-1][0]
        return [last_conv.weight]

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The 20 shared maps the heads read, in the module docstring's order. The pooling
        indices stay inside: the heads need no other view of the shared network, so a gradient
        taken at these maps is the heads' whole gradient with respect to the SegNet."""
        height, width = image.shape[-2:]
        if height % _DOWNSCALE or width % _DOWNSCALE:
            raise ValueError(f"MTAN needs an input size divisible by {_DOWNSCALE}, got "
                             f"{height}x{width}")
        features: list[torch.Tensor] = []
        indices: list[torch.Tensor] = []
        x = image
        for first, rest in zip(self.encoder_first, self.encoder_rest, strict=True):
            entry = first(x)
            out = rest(entry)
            features += [entry, out]
            x, where = F.max_pool2d(out, 2, 2, return_indices=True)
            indices.append(where)
        for first, rest, where in zip(self.decoder_first, self.decoder_rest, indices[::-1],
                                      strict=True):
            unpooled = F.max_unpool2d(x, where, 2, 2)
            x = rest(first(unpooled))
            features += [unpooled, x]
        return features


class MTANHead(nn.Module):
    """One task's attention branch: encoder and decoder attention masks and the prediction
    layer. `forward` reads the shared network only through the trunk's feature list and
    returns the raw prediction at the input resolution (the reference takes log_softmax of the
    segmentation output and scales normals to unit length; here the project does that).
    """

    def __init__(self, trunk: MTANTrunk, out_channels: int) -> None:
        super().__init__()
        # a tuple hides the trunk from nn.Module: registered here it would count its parameters
        # again and repeat its state-dict entries under every head
        self._trunk = (trunk,)
        w = _WIDTHS
        # encoder stage s: stage s's first features (+ the branch's previous output, w[s] too)
        self.encoder_att = nn.ModuleList(
            _attention(c if s == 0 else 2 * c, c) for s, c in enumerate(w))
        # decoder stage s: unpooled input + the shared block's output, masking the stage output
        dec_in = trunk.channels[2 * _STAGES::2]
        dec_out = trunk.channels[2 * _STAGES + 1::2]
        self.decoder_att = nn.ModuleList(
            _attention(c_in + c_out, c_out) for c_in, c_out in zip(dec_in, dec_out, strict=True))
        self.prediction = nn.Sequential(nn.Conv2d(w[0], w[0], 3, padding=1),
                                        nn.Conv2d(w[0], out_channels, 1))
        init_weights(self)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if len(features) != 4 * _STAGES:
            raise ValueError(f"MTANHead expects the trunk's {4 * _STAGES} feature maps, "
                             f"got {len(features)}")
        trunk = self._trunk[0]
        encoder, decoder = features[:2 * _STAGES], features[2 * _STAGES:]
        x: torch.Tensor | None = None
        for s, (mask, block) in enumerate(zip(self.encoder_att, trunk.encoder_att_blocks,
                                              strict=True)):
            entry, out = encoder[2 * s], encoder[2 * s + 1]
            gate = mask(entry if x is None else torch.cat((entry, x), dim=1))
            x = F.max_pool2d(block(gate * out), 2, 2)
        for s, (mask, block) in enumerate(zip(self.decoder_att, trunk.decoder_att_blocks,
                                              strict=True)):
            unpooled, out = decoder[2 * s], decoder[2 * s + 1]
            x = block(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
            x = mask(torch.cat((unpooled, x), dim=1)) * out
        return self.prediction(x)


def build_mtan(heads: Mapping[str, int]) -> tuple[MTANTrunk, dict[str, MTANHead]]:
    """The shared trunk and one head per task (task name -> output channels), in that order."""
    if not heads:
        raise ValueError("MTAN needs at least one task head")
    trunk = MTANTrunk()
    return trunk, {task: MTANHead(trunk, channels) for task, channels in heads.items()}
