"""A backbone with ResNetEncoder's interface (stem, layer1..layer4, channels,
last_shared_parameters) at a few thousand parameters: it makes architectures that hold
several backbones cheap to build and train in tests."""

from __future__ import annotations

from torch import nn

from xtask_mt.models.layers import init_weights


def _stage(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class TinyBackbone(nn.Module):
    """Five stages at strides 2, 4, 8, 16, 32 with `channels` outputs."""

    def __init__(self, channels: tuple[int, ...] = (4, 4, 8, 8, 8), **_ignored: object) -> None:
        super().__init__()
        self.stem = _stage(3, channels[0], 2)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            _stage(channels[i], channels[i + 1], 2) for i in range(4))
        self.channels = tuple(channels)
        init_weights(self)

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.layer4[0].weight]

    def forward(self, x):
        out = []
        for stage in (self.stem, self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            out.append(x)
        return out
