"""GPU slots for the jobs of a local sweep, so that parallel jobs spread over the GPUs instead
of all landing on GPU 0.

A sweep has (GPUs used) x `placement.jobs_per_gpu` slots; slot s runs on GPU number
s // jobs_per_gpu of those used. Each slot is an flock on its own file under
`<sweep dir>/.gpu_slots/`, because the kernel drops a lock when its holder dies (even by
kill -9): a failed or killed job never keeps its slot, and a re-run of the sweep command
places its remaining jobs again. A job that finds every slot taken waits for one, rather than
crowding a GPU that is already full.

The GPU count is a parameter (the caller reads torch.cuda.device_count()), so this module
never touches CUDA and its tests need no GPU.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from omegaconf import DictConfig, ListConfig

from xtask_mt.errors import ConfigError
from xtask_mt.locks import FileLock

log = logging.getLogger(__name__)

SLOTS_DIR = ".gpu_slots"  # under the sweep dir: one lock file per slot
POLL_SECONDS = 5.0        # how often a waiting job looks for a free slot


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class PlacementSettings:
    """conf/placement: how many jobs share one GPU, and which GPUs (None: every one the job
    sees)."""

    jobs_per_gpu: int = 1
    gpus: tuple[int, ...] | None = None

    @classmethod
    def from_config(cls, node: DictConfig | dict[str, Any]) -> PlacementSettings:
        """Read `placement.*`, raising one ConfigError that names every bad value."""
        jobs, gpus = node.get("jobs_per_gpu", 1), node.get("gpus", "auto")
        problems = []
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            problems.append(f"invalid config value placement.jobs_per_gpu={jobs!r}: expected an "
                            "integer >= 1 (the jobs that share one GPU)")
        listed = list(gpus) if isinstance(gpus, ListConfig | list | tuple) else None
        if listed is None:
            gpus_ok = gpus == "auto"
        else:
            gpus_ok = bool(listed) and all(isinstance(g, int) and not isinstance(g, bool)
                                           and g >= 0 for g in listed) \
                and len(set(listed)) == len(listed)
        if not gpus_ok:
            problems.append(f"invalid config value placement.gpus={gpus!r}: expected auto (every "
                            "GPU the job sees) or a non-empty list of distinct GPU indices "
                            ">= 0, e.g. 'placement.gpus=[0,1]'")
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(jobs, None if listed is None else tuple(listed))

    def devices(self, visible: int) -> tuple[int, ...]:
        """The CUDA indices to place jobs on, among the `visible` GPUs the job sees."""
        if visible < 1:
            raise ConfigError("GPU placement needs a GPU, but this job sees none; use "
                              "trainer.device=cpu")
        if self.gpus is None:
            return tuple(range(visible))
        missing = [g for g in self.gpus if g >= visible]
        if missing:
            seen = os.environ.get("CUDA_VISIBLE_DEVICES")
            hint = "" if seen is None else f", CUDA_VISIBLE_DEVICES={seen!r}"
            if os.environ.get("SUBMITIT_EXECUTOR") == "local":
                hint += ("; under hydra/launcher=local_submitit a job sees "
                         "hydra.launcher.gpus_per_node GPUs")
            raise ConfigError(
                f"placement.gpus={list(self.gpus)} names GPU(s) {missing} that this job does not "
                f"see: it sees {_plural(visible, 'GPU')} (0 to {visible - 1}{hint}); list "
                "indices among them, or set placement.gpus=auto")
        return self.gpus


@dataclass(frozen=True)
class Slot:
    """Slot `index` of `count`, on CUDA device `gpu`."""

    index: int
    count: int
    gpu: int
    jobs_per_gpu: int

    @property
    def device(self) -> str:
        return f"cuda:{self.gpu}"

    def describe(self) -> str:
        return (f"placed on GPU {self.gpu} (slot {self.index} of {self.count}, "
                f"{_plural(self.jobs_per_gpu, 'job')} per GPU)")


@dataclass
class HeldSlot:
    """A slot this process holds until `release()` (or the end of a `with` block)."""

    slot: Slot
    _lock: FileLock = field(repr=False)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> HeldSlot:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class GpuSlots:
    """The slots of one sweep: each of `gpus` (CUDA indices) `jobs_per_gpu` times, locked
    through files in `folder`. Files are named by GPU (`gpu3-1.lock`), so a re-run with
    another packing still counts the jobs an earlier one has running on each GPU."""

    def __init__(self, folder: Path, gpus: Sequence[int], jobs_per_gpu: int) -> None:
        self.folder = Path(folder)
        self.gpus = tuple(gpus)
        self.jobs_per_gpu = jobs_per_gpu
        self.count = len(self.gpus) * jobs_per_gpu

    def _slot(self, index: int) -> tuple[Slot, Path]:
        gpu = self.gpus[index // self.jobs_per_gpu]
        return (Slot(index, self.count, gpu, self.jobs_per_gpu),
                self.folder / f"gpu{gpu}-{index % self.jobs_per_gpu}.lock")

    def try_take(self, job_num: int) -> HeldSlot | None:
        """Slot job_num % count if free, else the next free one after it; None if all are
        taken."""
        for k in range(self.count):
            slot, path = self._slot((job_num + k) % self.count)
            lock = FileLock(path)
            if lock.acquire():
                return HeldSlot(slot, lock)
        return None

    def take(self, job_num: int, poll_s: float = POLL_SECONDS) -> HeldSlot:
        """A slot for job `job_num`, waiting (polling every `poll_s`) while all are taken."""
        waiting = False
        while (held := self.try_take(job_num)) is None:
            if not waiting:
                holders = sorted({FileLock(self._slot(i)[1]).holder() for i in range(self.count)})
                log.info("job %d waits for a free GPU slot: all %d (%s x %s per GPU) are taken "
                         "by running jobs (pids %s; locks in %s); it starts when one of them "
                         "ends", job_num, self.count, _plural(len(self.gpus), "GPU"),
                         _plural(self.jobs_per_gpu, "job"), ", ".join(holders), self.folder)
                waiting = True
            time.sleep(poll_s)
        return held
