"""ResNet encoder that exposes the five feature maps the U-Net decoders need."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

from xtask_mt.errors import UserError

ENCODER_DEPTHS: tuple[int, ...] = (18, 34, 50, 101, 152)

_BUILDERS = {
    18: (tv_models.resnet18, tv_models.ResNet18_Weights.IMAGENET1K_V1),
    34: (tv_models.resnet34, tv_models.ResNet34_Weights.IMAGENET1K_V1),
    50: (tv_models.resnet50, tv_models.ResNet50_Weights.IMAGENET1K_V1),
    101: (tv_models.resnet101, tv_models.ResNet101_Weights.IMAGENET1K_V1),
    152: (tv_models.resnet152, tv_models.ResNet152_Weights.IMAGENET1K_V1),
}


class EncoderWeightsError(UserError):
    """Raised when pretrained weights are requested but cannot be obtained."""


def _load_pretrained(net: nn.Module, depth: int, weights_path: str | None) -> None:
    """Load ImageNet weights from a local file if given, else from torchvision's cache/download."""
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise EncoderWeightsError(
                f"encoder.weights_path={weights_path!r} does not exist. Point it at a torchvision "
                f"resnet{depth} state-dict file (e.g. resnet{depth}-*.pth) or set "
                "encoder.pretrained=false."
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise EncoderWeightsError(
                f"{path} is not a resnet{depth} state dict: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}."
            )
        return
    weights = _BUILDERS[depth][1]
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as exc:  # network errors come in many types
        raise EncoderWeightsError(
            f"encoder.pretrained=true but torchvision could not load ImageNet weights for "
            f"resnet{depth} ({type(exc).__name__}: {exc}). Without network access, download "
            f"{weights.url} elsewhere and pass encoder.weights_path=/path/to/file, or set "
            "encoder.pretrained=false."
        ) from exc
    net.load_state_dict(state)


class ResNetEncoder(nn.Module):
    """torchvision ResNet split into stem, layer1..layer4 (strides 2, 4, 8, 16, 32)."""

    def __init__(
        self, depth: int = 34, pretrained: bool = False, weights_path: str | None = None
    ) -> None:
        super().__init__()
        if depth not in _BUILDERS:
            raise ValueError(f"encoder depth must be one of {ENCODER_DEPTHS}, got {depth}")
        net = _BUILDERS[depth][0](weights=None)
        if pretrained or weights_path:
            _load_pretrained(net, depth, weights_path)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.layer1 = nn.Sequential(net.maxpool, net.layer1)
        self.layer2, self.layer3, self.layer4 = net.layer2, net.layer3, net.layer4
        expansion = 4 if depth >= 50 else 1
        self.channels: tuple[int, ...] = (64, 64 * expansion, 128 * expansion,
                                          256 * expansion, 512 * expansion)
        self.strides: tuple[int, ...] = (2, 4, 8, 16, 32)

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """Weights of the last conv in layer4: where GradNorm measures task gradients."""
        last_block = self.layer4[-1]
        conv = getattr(last_block, "conv3", None) or last_block.conv2
        return [conv.weight]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.stem(x)
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]
