"""Keep freed tensor memory in the process instead of handing it back to the kernel.

A training step on CPU allocates and frees gigabytes of activations and gradients. glibc's
malloc serves blocks above its mmap threshold with fresh mmap() pages and unmaps them on
free(), so every step pays a page fault (and the kernel zeroing the page) for every 4 KiB of
those buffers again. On the 2-core reference machine that was a third of an fp32 step.
Serving all blocks from the heap and never trimming it lets later steps reuse the pages.
"""

from __future__ import annotations

import ctypes
import logging
import sys

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)

# mallopt() parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # largest int mallopt takes: only trim beyond 2 GiB of free top


def retain_freed_host_memory() -> bool:
    """Tell glibc malloc to serve large blocks from the heap and keep freed memory.

    Process-wide and inherited by forked DataLoader workers. Returns False (and changes
    nothing) where the C library has no mallopt, e.g. off Linux or with musl.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    if not applied:
        log.debug("mallopt refused the settings; freed host memory goes back to the kernel")
    return applied


def configure_host_memory(device: torch.device, trainer_cfg: DictConfig) -> bool:
    """Apply `trainer.retain_host_memory` (default on) for a process computing on `device`:
    only CPU work allocates its tensors on the host. Returns whether it took effect."""
    if device.type != "cpu" or not bool(trainer_cfg.get("retain_host_memory", True)):
        return False
    return retain_freed_host_memory()
