"""How close a training step comes to the hardware's limit: its FLOPs and the device's peak.

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode, which counts matrix
multiplications and convolutions (forward and backward) from their shapes; elementwise work,
normalisation and the optimiser are not counted, the usual convention for model FLOP
utilisation (MFU). Peaks are dense (no 2:4 sparsity) TFLOP/s from vendor datasheets, per
precision; a datasheet that gives sparse figures only is halved.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from xtask_mt.config.build import build_objective, build_optimizer, build_weighting
from xtask_mt.engine.step import TrainingParts, train_step
from xtask_mt.runtime.precision import StepOptions


@dataclass(frozen=True)
class GpuPeak:
    """Dense peak TFLOP/s of one GPU model per precision (None: no such tensor-core path).
    fp16/bf16 are with fp32 accumulation, as PyTorch's kernels run them (GeForce cards do
    half that rate of their fp16-accumulate figure)."""

    name: str
    pattern: str  # regex searched (case-insensitive) in torch.cuda.get_device_name()
    bf16: float | None
    fp16: float | None
    tf32: float | None
    fp32: float
    source: str


_HOPPER = "NVIDIA H100/H200 datasheets, Hopper whitepaper (sparse figures halved)"
# Most specific first: the first pattern that matches the device name wins.
GPU_PEAKS: tuple[GpuPeak, ...] = (
    GpuPeak("B200", r"\bB200\b", 2250.0, 2250.0, 1100.0, 75.0,
            "NVIDIA HGX B200 specifications, per GPU (sparse figures halved)"),
    GpuPeak("H100 NVL", r"\bH100\b.*\bNVL\b", 835.5, 835.5, 417.5, 60.0, _HOPPER),
    GpuPeak("H100 PCIe", r"\bH100\b.*\bPCIe\b", 756.5, 756.5, 378.0, 51.2, _HOPPER),
    GpuPeak("H100 SXM", r"\bH100\b", 989.4, 989.4, 494.7, 66.9, _HOPPER),
    GpuPeak("H200 NVL", r"\bH200\b.*\bNVL\b", 835.5, 835.5, 417.5, 60.0, _HOPPER),
    GpuPeak("H200 SXM", r"\bH200\b", 989.4, 989.4, 494.7, 66.9, _HOPPER),
    GpuPeak("GH200", r"\bGH200\b", 989.4, 989.4, 494.7, 66.9, _HOPPER),
    GpuPeak("A100", r"\bA100\b", 312.0, 312.0, 156.0, 19.5,
            "NVIDIA A100 datasheet (SXM and PCIe, 40 and 80 GB)"),
    GpuPeak("A10G", r"\bA10G\b", 70.0, 70.0, 35.0, 35.0,
            "AWS A10G (no NVIDIA datasheet): 80 GA102 SMs at GeForce tensor rates"),
    GpuPeak("A10", r"\bA10\b", 125.0, 125.0, 62.5, 31.2, "NVIDIA A10 datasheet"),
    GpuPeak("A40", r"\bA40\b", 149.7, 149.7, 74.8, 37.4, "NVIDIA A40 datasheet"),
    GpuPeak("L40S", r"\bL40S\b", 362.05, 362.05, 183.0, 91.6, "NVIDIA L40S datasheet"),
    GpuPeak("L40", r"\bL40\b", 181.05, 181.05, 90.5, 90.5, "NVIDIA L40 datasheet"),
    GpuPeak("L4", r"\bL4\b", 121.0, 121.0, 60.0, 30.3,
            "NVIDIA L4 datasheet (sparse figures halved)"),
    GpuPeak("RTX 4090", r"RTX 4090\b", 165.2, 165.2, 82.6, 82.6,
            "NVIDIA Ada Lovelace whitepaper (fp32 accumulate)"),
    GpuPeak("RTX 3090 Ti", r"RTX 3090 Ti\b", 80.0, 80.0, 40.0, 40.0,
            "NVIDIA GA102 specifications (fp32 accumulate)"),
    GpuPeak("RTX 3090", r"RTX 3090\b", 71.0, 71.0, 35.6, 35.6,
            "NVIDIA Ampere GA102 whitepaper (fp32 accumulate)"),
    GpuPeak("V100S", r"\bV100S\b", None, 130.0, None, 16.4, "NVIDIA V100S datasheet"),
    GpuPeak("V100 PCIe", r"\bV100\b.*\bPCIE\b", None, 112.0, None, 14.0,
            "NVIDIA V100 datasheet"),
    GpuPeak("V100 SXM2", r"\bV100\b", None, 125.0, None, 15.7, "NVIDIA V100 datasheet"),
    GpuPeak("T4", r"\bT4\b", None, 65.0, None, 8.1, "NVIDIA T4 datasheet"),
)


def compute_precision(precision: str, device: torch.device) -> str:
    """The precision the step's matrix maths run in: fp32, tf32, bf16 or fp16.

    trainer.precision=32 runs convolutions and matmuls in TF32 on a GPU with TF32 tensor
    cores (compute capability 8.0 on) when PyTorch allows it, which cuDNN does by default."""
    if precision == "bf16-mixed":
        return "bf16"
    if precision == "16-mixed":
        return "fp16"
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8 and (
            torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32):
        return "tf32"
    return "fp32"


@dataclass(frozen=True)
class Peak:
    """A device's peak TFLOP/s at one precision (None when unknown) and where it came from."""

    tflops: float | None
    source: str


def device_peak(device: torch.device, precision: str, override: float = 0.0) -> Peak:
    """The dense peak of `device` at `precision` (compute_precision's): `override` when given
    (> 0, e.g. a CPU's peak), else the GPU_PEAKS row matching the GPU's name."""
    if override > 0:
        return Peak(override, "--peak-tflops")
    if device.type != "cuda":
        return Peak(None, f"no peak table for a {device.type} device: pass --peak-tflops")
    name = torch.cuda.get_device_name(device)
    for gpu in GPU_PEAKS:
        if re.search(gpu.pattern, name, flags=re.IGNORECASE):
            value = getattr(gpu, precision)
            if value is None:
                return Peak(None, f"{gpu.name} has no {precision} tensor cores in the peak "
                                  "table: pass --peak-tflops")
            return Peak(value, f"{gpu.name}, {precision} dense: {gpu.source}")
    return Peak(None, f"{name!r} is not in the peak table (benchmarks/roofline.py): pass "
                      "--peak-tflops")


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step over its batch: the forward pass with the losses, and the
    whole step (forward, the weighting's backward pass or passes, the update)."""

    forward: int
    step: int


def count_step_flops(cfg: DictConfig, model: nn.Module, options: StepOptions,
                     batch: dict[str, torch.Tensor]) -> StepFlops:
    """FLOPs of one train_step on `batch`, run on a copy of the eager `model` with a fresh
    weighting and optimiser, so the timed model, its optimiser state and batch-norm statistics
    are untouched; FlopCounterMode cannot see into a torch.compile graph, whose convolutions
    and matmuls are the same as the eager model's."""
    twin = copy.deepcopy(model)
    weighting = build_weighting(cfg, twin.tasks).to(options.device)
    parts = TrainingParts(twin, twin, build_objective(cfg), weighting,
                          build_optimizer(cfg, twin, weighting), options, options.grad_scaler())
    counter = FlopCounterMode(display=False)
    after: dict[str, int] = {}

    @contextlib.contextmanager
    def mark(phase: str) -> Iterator[None]:
        yield
        after[phase] = counter.get_total_flops()

    with counter:
        train_step(parts, batch, 0, timer=mark)
    return StepFlops(after["forward_loss"], counter.get_total_flops())
