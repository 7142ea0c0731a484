"""DeepLabV3+ (Chen et al., ECCV 2018) split into a shared dilated ResNet trunk and one head
per task, the network of the LibMTL benchmark protocol.

The trunk is torchvision's ResNet with the strides of its last stages replaced by dilation
(`replace_stride_with_dilation`), so the deepest map is at 1/8 or 1/16 of the input (the
output stride) with ImageNet weights that load unchanged. torchvision dilates only its
bottleneck blocks (ResNet-50 and deeper); the basic blocks of ResNet-18/34 are dilated here
the same way (first block of a stage at the previous dilation, the others at the new one).
Each head is torchvision's ASPP on the deepest map, upsampled to the low-level map (layer1,
1/4 of the input), fused with that map's 48-channel projection by two 3x3 conv blocks and
classified by a 1x1 conv, then upsampled to the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.segmentation.deeplabv3 import ASPP

from xtask_mt.models.encoder import _BUILDERS, _load_pretrained

OUTPUT_STRIDES = (8, 16)
# which of layer2..layer4 trade their stride for dilation, per output stride
_DILATE = {8: (False, True, True), 16: (False, False, True)}
# ASPP rates of the DeepLab papers: doubled when the output stride halves
ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}
ASPP_CHANNELS = 256
LOW_LEVEL_CHANNELS = 48


def _dilate_basic_stage(stage: nn.Sequential, previous: int, dilation: int) -> None:
    """Make a stage of BasicBlocks keep its input size: stride 1 everywhere, its first block
    at the previous dilation and the others at `dilation` (what torchvision does for
    bottlenecks); parameters and their names are unchanged."""
    for index, block in enumerate(stage):
        rate = previous if index == 0 else dilation
        for conv in (block.conv1, block.conv2):
            conv.stride, conv.dilation, conv.padding = (1, 1), (rate, rate), (rate, rate)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def dilated_resnet(depth: int, output_stride: int) -> tv_resnet.ResNet:
    """torchvision's ResNet-`depth` with its deepest map at 1/`output_stride` of the input."""
    if output_stride not in _DILATE:
        raise ValueError(f"output stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    dilate = _DILATE[output_stride]
    builder = _BUILDERS[depth][0]
    if depth >= 50:
        return builder(weights=None, replace_stride_with_dilation=list(dilate))
    net = builder(weights=None)
    dilation = 1
    for stage, flag in zip((net.layer2, net.layer3, net.layer4), dilate, strict=True):
        if flag:
            _dilate_basic_stage(stage, dilation, dilation * 2)
            dilation *= 2
    return net


class DilatedResNetTrunk(nn.Module):
    """Stem to layer4 of a dilated ResNet; `forward` returns [layer1 map (1/4, the low-level
    skip), layer4 map (1/output_stride)]."""

    def __init__(self, depth: int = 50, output_stride: int = 8, pretrained: bool = False,
                 weights_path: str | None = None) -> None:
        super().__init__()
        net = dilated_resnet(depth, output_stride)
        if pretrained or weights_path:
            _load_pretrained(net, depth, weights_path)  # the encoder group's loader
        self.output_stride = output_stride
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (net.layer1, net.layer2,
                                                              net.layer3, net.layer4)
        expansion = 4 if depth >= 50 else 1
        self.channels: tuple[int, ...] = (64 * expansion, 512 * expansion)

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """Weights of the last conv in layer4: where GradNorm measures task gradients."""
        last_block = self.layer4[-1]
        conv = getattr(last_block, "conv3", None) or last_block.conv2
        return [conv.weight]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        low = self.layer1(self.stem(x))
        return [low, self.layer4(self.layer3(self.layer2(low)))]


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class DeepLabV3PlusHead(nn.Module):
    """ASPP on the deepest map + the low-level skip -> one task's raw prediction at 4x the
    low-level map's size (the input size)."""

    def __init__(self, trunk_channels: tuple[int, ...], out_channels: int,
                 rates: tuple[int, ...]) -> None:
        super().__init__()
        low_ch, high_ch = trunk_channels
        self.aspp = ASPP(high_ch, rates, ASPP_CHANNELS)
        self.low_level = nn.Sequential(*_conv_bn_relu(low_ch, LOW_LEVEL_CHANNELS, 1))
        self.fuse = nn.Sequential(
            *_conv_bn_relu(ASPP_CHANNELS + LOW_LEVEL_CHANNELS, ASPP_CHANNELS, 3),
            *_conv_bn_relu(ASPP_CHANNELS, ASPP_CHANNELS, 3))
        self.classifier = nn.Conv2d(ASPP_CHANNELS, out_channels, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        low, high = features
        x = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear",
                          align_corners=False)
        x = self.classifier(self.fuse(torch.cat([x, self.low_level(low)], dim=1)))
        return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)


def build_deeplabv3plus(heads: dict[str, int], depth: int, output_stride: int,
                        pretrained: bool = False, weights_path: str | None = None
                        ) -> tuple[DilatedResNetTrunk, dict[str, DeepLabV3PlusHead]]:
    """The shared trunk and one head per task (task name -> output channels)."""
    trunk = DilatedResNetTrunk(depth, output_stride, pretrained, weights_path)
    rates = ASPP_RATES[output_stride]
    return trunk, {task: DeepLabV3PlusHead(trunk.channels, channels, rates)
                   for task, channels in heads.items()}
