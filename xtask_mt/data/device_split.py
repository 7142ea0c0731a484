"""A split's frames held once on the training device (dataset.device_cache), so batches are
made there instead of by DataLoader workers.

Every field of every frame becomes one (N, H, W[, k]) tensor in the dtype the frames have
(uint8 images stay uint8, a float64 map becomes float32). A file dataset's frames come
straight from its memory-mapped preparation cache, others' (the synthetic scenes) from
`frame(index)`; either way in chunks, so the host never holds a second copy of the split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from xtask_mt.errors import ConfigError

log = logging.getLogger(__name__)

_CHUNK = 64  # frames copied to the device at a time
_MEMINFO = Path("/proc/meminfo")


class FrameSource(Protocol):
    """A split whose frames are HxW(xk) numpy maps named as in the sample."""

    def __len__(self) -> int: ...
    def frame(self, index: int) -> dict[str, np.ndarray]: ...


@dataclass
class DeviceSplit:
    """The frames of one split as (N, H, W[, k]) tensors on one device."""

    fields: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.fields["seg"])

    @property
    def device(self) -> torch.device:
        return self.fields["seg"].device

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of every frame."""
        height, width = self.fields["seg"].shape[1:3]
        return int(height), int(width)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.fields.values())


def _stored_dtype(array: np.ndarray) -> torch.dtype:
    """float64 maps are held as float32 (what the sample has); everything else as it is."""
    if array.dtype == np.float64:
        return torch.float32
    return torch.from_numpy(np.empty(0, array.dtype)).dtype


def free_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on `device`: CUDA's free memory, or the host's
    available memory (from /proc/meminfo); None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu" and _MEMINFO.is_file():
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _describe(dataset: Any) -> str:
    """'the train split of cityscapes', for messages."""
    return f"the {getattr(dataset, 'split', '?')} split of {getattr(dataset, 'name', 'data')}"


def load_split(dataset: FrameSource, device: torch.device) -> DeviceSplit:
    """Copy every frame of `dataset` onto `device`; a ConfigError saying what to do when the
    split does not fit in the memory free there."""
    first = dataset.frame(0)
    n = len(dataset)
    dtypes = {k: _stored_dtype(v) for k, v in first.items()}
    need = n * sum(v.size * dtypes[k].itemsize for k, v in first.items())
    free = free_memory(device)

    def does_not_fit(free_bytes: float) -> ConfigError:
        return ConfigError(
            f"dataset.device_cache=true: {_describe(dataset)} takes {need / 2**30:.2f} GiB but "
            f"{device} has {free_bytes / 2**30:.2f} GiB free; set dataset.device_cache=false "
            "(batches from DataLoader workers) or lower dataset.height/width")

    if free is not None and need > free:
        raise does_not_fit(free)
    try:  # jobs packed on one GPU may all have seen the same free memory
        fields = {k: torch.empty((n, *v.shape), dtype=dtypes[k], device=device)
                  for k, v in first.items()}
    except torch.OutOfMemoryError:
        raise does_not_fit(free_memory(device) or 0) from None
    prepared = getattr(dataset, "prepared", None)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        if prepared is not None:
            chunk = {k: np.array(a[start:stop]) for k, a in prepared.arrays().items()}
        else:
            frames = [dataset.frame(i) for i in range(start, stop)]
            chunk = {k: np.stack([f[k] for f in frames]) for k in fields}
        for key, tensor in fields.items():
            tensor[start:stop].copy_(torch.from_numpy(chunk[key]))
    split = DeviceSplit(fields)
    log.info("%s: %d frames on %s (%.0f MiB)", _describe(dataset), n, device,
             split.nbytes / 2**20)
    return split
