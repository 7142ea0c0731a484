"""Sample orders that split a dataset over processes and agree with a single process."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world_size, ... in order: each process evaluates its own share
    of the set, every sample exactly once (torch's DistributedSampler repeats samples to
    even out the shares, which would count them twice in the metrics)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if size < world_size:
            raise ValueError(f"a split of {size} samples cannot be shared by {world_size} "
                             "processes; use more samples or fewer processes")
        self.size, self.rank, self.world_size = size, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))
