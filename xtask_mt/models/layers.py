"""Small building blocks shared by the decoders and the transfer nets."""

from __future__ import annotations

import torch
from torch import nn


class ConcatConv2d(nn.Conv2d):
    """A convolution over the channel concatenation of its inputs, computed as the sum of one
    convolution per input over the matching slice of the weight.

    Same parameters (and state dict) as nn.Conv2d over `torch.cat(inputs, 1)` and the same
    result up to float rounding, but the concatenated copy is never made. In backward each
    input gets a dense gradient of its own instead of a strided slice of the concatenation's,
    which spares the upsampling before it a gradient copy: on CPU with channels-last that made
    these blocks' backward 1.6x faster in fp32 and 2.3x in bf16.
    """

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        widths = [x.shape[1] for x in inputs]
        if sum(widths) != self.in_channels:
            raise ValueError(f"inputs have {widths} channels, the convolution expects "
                             f"{self.in_channels} in all")
        weights = self.weight.split(widths, dim=1)
        out = self._conv_forward(inputs[0], weights[0], self.bias)
        for x, weight in zip(inputs[1:], weights[1:], strict=True):
            # convolution backward needs its inputs, not its output: adding in place is safe
            out = out.add_(self._conv_forward(x, weight, None))
        return out


class ConvBlock(nn.Sequential):
    """n x (3x3 conv [+ BN] + ReLU). The first convolution takes one or more inputs, which it
    treats as concatenated along the channels (see ConcatConv2d)."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        first, *rest = self
        x = first(*inputs)
        for layer in rest:
            x = layer(x)
        return x


def conv_block(in_ch: int, out_ch: int, n_convs: int, batch_norm: bool,
               bias: bool | None = None) -> ConvBlock:
    """n_convs x (3x3 conv [+ BN] + ReLU); `in_ch` counts the channels of all inputs.
    The convolutions have a bias unless followed by BN, or as `bias` says."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        conv = ConcatConv2d if i == 0 else nn.Conv2d
        layers.append(conv(in_ch if i == 0 else out_ch, out_ch, 3, padding=1,
                           bias=not batch_norm if bias is None else bias))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    return ConvBlock(*layers)


def init_weights(module: nn.Module) -> None:
    """Xavier-normal convolutions, BN weight 1 / bias 0, as the method prescribes."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
