"""Shared machinery of the file-backed datasets: raw decoding or the preparation cache,
training augmentation, and the sample dict."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from xtask_mt.data.cache import PreparedSplit, prepare
from xtask_mt.data.files import DatasetError
from xtask_mt.data.splits import BENCHMARK_SPLITS
from xtask_mt.sample import make_sample

Frame = dict[str, np.ndarray]


class FrameDataset(Dataset, ABC):
    """A split of frames on disk, each decoded to ``image``, ``seg``, ``depth``, ``depth_mask``
    at (height, width).

    With `cache_dir`, frames are prepared once into a memory-mapped cache there (see
    cache.py) and read from it; without, every access decodes the source files.
    """

    name: str = ""
    provides: tuple[str, ...] = ("seg", "depth", "depth_mask")  # sample keys it can give
    depth_unit: str = ""
    depth_target: str = "depth"  # 'depth' (nearer = smaller) or 'disparity' (nearer = larger)
    decoder_version: int = 1     # bump when decoding changes, so caches are prepared again

    def __init__(self, root: str | Path, split: str, height: int, width: int,
                 class_names: Sequence[str], transform: Callable[[Frame], Frame] | None = None,
                 cache_dir: str | Path | None = None, progress: bool = True) -> None:
        if split not in BENCHMARK_SPLITS:
            raise ValueError(f"split must be one of {BENCHMARK_SPLITS}, got {split!r}")
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be positive, got {height}x{width}")
        self.root, self.split = Path(root), split
        self.height, self.width = int(height), int(width)
        self.class_names = tuple(class_names)
        self.transform = transform
        self.files = self._index()
        if not self.files:
            raise DatasetError(f"the {split} split under {self.root} holds no frames; check "
                               "dataset.root and that the archive was extracted completely")
        self.prepared = (PreparedSplit(prepare(self, Path(cache_dir), progress=progress))
                         if cache_dir is not None else None)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abstractmethod
    def _index(self) -> list[tuple[Path, ...]]:
        """Source files of every frame, in a stable order; errors name what is missing."""

    @abstractmethod
    def decode(self, index: int) -> Frame:
        """Decode frame `index` from its source files at (height, width)."""

    def cache_name(self) -> str:
        return f"{self.name}-{self.split}-{self.height}x{self.width}-c{self.num_classes}"

    def cache_key(self) -> dict[str, Any]:
        files = []
        for paths in self.files:
            for path in paths:
                stat = path.stat()
                files.append([str(path.relative_to(self.root)), stat.st_size, stat.st_mtime_ns])
        return {"dataset": self.name, "decoder": self.decoder_version, "split": self.split,
                "height": self.height, "width": self.width, "num_classes": self.num_classes,
                "files": files}

    def __len__(self) -> int:
        return len(self.files)

    def frame(self, index: int) -> Frame:
        """Frame `index` before augmentation, from the cache when there is one."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.prepared.read(index) if self.prepared is not None else self.decode(index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frame = self.frame(index)
        if self.transform is not None:
            frame = self.transform(frame)
        image = frame["image"]
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / 255.0
        return make_sample(image, frame["seg"], frame["depth"], frame["depth_mask"],
                           frame.get("normal"))
