"""Speed options of a training step: mixed precision, channels-last memory, torch.compile.

Autocast covers the network's forward pass only; losses and metrics cast the outputs to fp32
themselves (softmax, log, SSIM statistics, confusion matrix), so they keep full precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from xtask_mt.errors import ConfigError

PRECISIONS: dict[str, torch.dtype | None] = {
    "32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16,
}


@dataclass(frozen=True)
class StepOptions:
    """How a step runs on `device`: autocast dtype (None = fp32) and input memory format."""

    device: torch.device
    precision: str = "32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        check_precision(self.precision, self.device)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to the chosen dtype, or nothing for fp32."""
        dtype = self.autocast_dtype
        if dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            yield

    def image(self, image: torch.Tensor) -> torch.Tensor:
        """The input batch in the memory format the model was converted to."""
        if self.channels_last:
            return image.contiguous(memory_format=torch.channels_last)
        return image

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """Loss scaling where the precision needs it; None else."""
        if not needs_grad_scaler(self.precision):
            return None
        return torch.amp.GradScaler(self.device.type)


def needs_grad_scaler(precision: str) -> bool:
    """fp16's small exponent range underflows gradients unless the loss is scaled."""
    return PRECISIONS.get(precision) == torch.float16


def check_precision(precision: str, device: torch.device) -> None:
    """Clear errors for an unknown precision or fp16 where it is not supported."""
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is not one of {list(PRECISIONS)}")
    if precision == "16-mixed" and device.type != "cuda":
        raise ConfigError(f"trainer.precision=16-mixed needs a CUDA device, not {device}; use "
                         "trainer.precision=bf16-mixed (works on CPU) or 32")


def precision_name(value: object) -> str:
    """Normalise the config value: Hydra parses `trainer.precision=32` as the int 32."""
    return str(value)


def to_channels_last(model: nn.Module, enabled: bool) -> nn.Module:
    """Convert the model's 4-D weights to channels-last (NHWC), which convolution kernels
    on CPU (oneDNN) and on tensor-core GPUs run faster."""
    return model.to(memory_format=torch.channels_last) if enabled else model


def maybe_compile(model: nn.Module, enabled: bool, backend: str = "inductor") -> nn.Module:
    """torch.compile the module for the training step (the original keeps the weights).

    Donated buffers are turned off: with them a compiled backward may run only once per
    forward, and gradient-based weighting methods and the gradient diagnostics take one
    backward pass per task through the same graph (retain_graph=True)."""
    if not enabled:
        return model
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
    return torch.compile(model, backend=backend)
