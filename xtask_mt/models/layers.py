"""Small building blocks shared by the decoders and the transfer nets."""

from __future__ import annotations

from torch import nn


def conv_block(in_ch: int, out_ch: int, n_convs: int, batch_norm: bool) -> nn.Sequential:
    """n_convs x (3x3 conv [+ BN] + ReLU)."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers.append(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1,
                                bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


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
