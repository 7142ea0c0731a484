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
from xtask_mt.runtime.cpu_features import NATIVE_BF16_FLAGS, cpu_name, has_avx512, native_bf16

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


def resolve_channels_last(value: object, device: torch.device) -> bool:
    """trainer.channels_last: true, false, or auto. Auto takes channels-last (NHWC) on a GPU
    (tensor-core convolutions want it) and on a CPU with AVX-512, NCHW on other CPUs: the
    default step measured 1.1x faster in NHWC on an AVX-512 AMD EPYC and an AVX-512 Xeon,
    and 1.5x slower on an AVX2-only AMD EPYC (README, Performance)."""
    if isinstance(value, bool):
        return value
    if str(value) != "auto":
        raise ConfigError(f"trainer.channels_last={value!r} must be true, false or auto")
    return device.type == "cuda" or (device.type == "cpu" and has_avx512())


def bf16_warning(precision: str, device: torch.device) -> str | None:
    """A one-line warning when bf16 is asked on a CPU that only emulates it (many times
    slower than fp32 there); None otherwise or when the CPU cannot tell."""
    if PRECISIONS.get(precision) != torch.bfloat16 or device.type != "cpu" \
            or native_bf16() is not False:
        return None
    return (f"trainer.precision={precision} on a CPU without native bf16 ({cpu_name()} lists "
            f"none of the CPU flags {', '.join(NATIVE_BF16_FLAGS)}): bf16 is emulated there "
            "and runs many times slower than fp32; use trainer.precision=32")


def to_channels_last(model: nn.Module, enabled: bool) -> nn.Module:
    """Convert the model's 4-D weights to channels-last (NHWC), which convolution kernels
    on tensor-core GPUs and on AVX-512 CPUs (oneDNN) run faster."""
    return model.to(memory_format=torch.channels_last) if enabled else model


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def uses_cuda_graphs(compile_mode: str, device: torch.device) -> bool:
    """Whether a model compiled in this mode replays CUDA graphs on `device`."""
    return device.type == "cuda" and compile_mode in ("reduce-overhead", "max-autotune")


def maybe_compile(model: nn.Module, enabled: bool, backend: str = "inductor",
                  mode: str = "default") -> nn.Module:
    """torch.compile the module for the training step (the original keeps the weights).
    `mode` is inductor's: reduce-overhead replays the step's kernels as CUDA graphs, which
    saves the launch cost of a small model at fixed batch shapes.

    Donated buffers are turned off: with them a compiled backward may run only once per
    forward, and gradient-based weighting methods and the gradient diagnostics take one
    backward pass per task through the same graph (retain_graph=True)."""
    if not enabled:
        return model
    if mode not in COMPILE_MODES:
        raise ConfigError(f"trainer.compile_mode={mode!r} is not one of {list(COMPILE_MODES)}")
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
    if backend != "inductor":  # other backends take no mode
        return torch.compile(model, backend=backend)
    return torch.compile(model, backend=backend, mode=None if mode == "default" else mode)
