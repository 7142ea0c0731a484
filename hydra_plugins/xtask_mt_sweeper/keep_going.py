"""Hydra's basic sweeper, but a failed job does not stop the jobs of later batches.

Hydra's BasicSweeper re-raises a failed job's error after each batch
(hydra.sweeper.max_batch_size), so with batches smaller than the sweep the first failure ends
it. This one holds the failures back and, once every batch has run, ends the command with one
line naming the failed jobs (exit 1); each job's job.json holds its error. A stop signal
(SystemExit from a job) still ends the sweep at once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from xtask_mt.study.job_returns import describe, log_if_bug

_LISTED = 3  # failed jobs named in the final line; the rest are counted


class _HoldFailures:
    """The sweeper's launcher, keeping failed jobs' returns out of the batch's results (which
    the basic sweeper would raise from)."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher
        self.failed: list[JobReturn] = []
        self.launched = 0

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        results = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        self.launched += len(results)
        self.failed += [r for r in results if r.status == JobStatus.FAILED]
        return [r for r in results if r.status != JobStatus.FAILED]


class KeepGoingSweeper(BasicSweeper):
    """BasicSweeper whose failed jobs end the command only after the last batch."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.held = _HoldFailures(self.launcher)
        self.launcher = self.held  # type: ignore[assignment]

    def sweep(self, arguments: list[str]) -> Any:
        returns = super().sweep(arguments)
        failed = self.held.failed
        if not failed:
            return returns
        for job in failed:
            log_if_bug(job)
        listed = "; ".join(describe(job) for job in failed[:_LISTED])
        more = f" (and {len(failed) - _LISTED} more)" if len(failed) > _LISTED else ""
        print(f"error: {len(failed)} of {self.held.launched} jobs failed: {listed}{more}. "
              "Each failed job's job.json holds its error; the same command again re-runs the "
              "failed jobs and skips the finished ones", file=sys.stderr)
        sys.exit(1)
