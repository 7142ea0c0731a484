"""The loader of a split held on the device (dataset.device_cache): a DataLoader's
interface as the training loop uses it, batches made on the device.

It takes a DataLoader's sampler, batch size and last-batch rule, so the sample order (and
its DDP sharding) is the DataLoader's. Each batch's augmentation views are drawn on the host
from numpy's stream when the batch is taken, frame after frame, as the DataLoader's
dataset draws them with num_workers=0: for a fixed seed both give the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from xtask_mt.data.device_batches import apply_views, to_sample, upload
from xtask_mt.data.device_split import DeviceSplit
from xtask_mt.data.transforms import TrainAugmentation


class DeviceLoader:
    """Batches of `split`, in `sampler`'s order, augmented on the device by `augmentation`
    (None: whole frames). `generator` is there to be seeded as a DataLoader's is; only
    worker processes, which this loader has none of, would read it."""

    def __init__(self, split: DeviceSplit, dataset: Dataset, sampler: Sampler[int],
                 batch_size: int, drop_last: bool, generator: torch.Generator | None,
                 augmentation: TrainAugmentation | None) -> None:
        self.split, self.dataset, self.sampler = split, dataset, sampler
        self.batch_size, self.drop_last, self.generator = batch_size, drop_last, generator
        self.augmentation = augmentation

    @classmethod
    def like(cls, loader: DataLoader, split: DeviceSplit) -> DeviceLoader:
        """The device loader giving `loader`'s batches (num_workers=0) from `split`, which
        holds `loader.dataset`'s frames."""
        augmentation = getattr(loader.dataset, "transform", None)
        if augmentation is not None and not isinstance(augmentation, TrainAugmentation):
            raise TypeError(f"dataset.device_cache applies TrainAugmentation only, not "
                            f"{type(augmentation).__name__}")
        if loader.batch_size is None:
            raise TypeError("dataset.device_cache needs a loader with a batch size")
        return cls(split, loader.dataset, loader.sampler, loader.batch_size, loader.drop_last,
                   loader.generator, augmentation)

    def __len__(self) -> int:
        count = len(self.sampler)  # type: ignore[arg-type]
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = list(self.sampler)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            indices = order[start:start + self.batch_size]
            samples = upload(np.asarray(indices, dtype=np.int64), self.split.device)
            if self.augmentation is None:
                maps = {k: v[samples] for k, v in self.split.fields.items()}
            else:
                views = [self.augmentation.draw(*self.split.size) for _ in indices]
                maps = apply_views(self.split, samples, views, self.augmentation)
            yield to_sample(maps)
