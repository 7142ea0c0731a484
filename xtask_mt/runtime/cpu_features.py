"""What the CPU at hand can do, for the choices that depend on it: the memory format of the
network (trainer.channels_last=auto) and whether bf16 runs natively (trainer.precision)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

_CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (x86 `flags`, Arm `Features`); empty
    where /proc/cpuinfo is not there (macOS, Windows)."""
    try:
        text = _CPUINFO.read_text()
    except OSError:
        return frozenset()
    return parse_flags(text)


def parse_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor listed in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it, else what the platform module says."""
    try:
        for line in _CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_avx512(flags: frozenset[str] | None = None) -> bool:
    """AVX-512 foundation instructions (x86); from torch's own dispatch level where the
    flags cannot be read."""
    flags = cpu_flags() if flags is None else flags
    if flags:
        return "avx512f" in flags
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


# x86: AVX-512 BF16 or AMX-BF16; Arm: the BF16 extension (FEAT_BF16)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def native_bf16(flags: frozenset[str] | None = None) -> bool | None:
    """Whether the CPU computes in bf16 natively; None when its flags cannot be read."""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return None
    return any(f in flags for f in NATIVE_BF16_FLAGS)
