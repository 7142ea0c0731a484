"""A job's .hydra/*.yaml, which Hydra rewrites before the job starts: a job that is refused
its folder (in use by another process, or holding a finished job) puts them back, so that
evaluate.py and the sweep report still read the job the folder holds."""

from __future__ import annotations

import shutil
from pathlib import Path

from xtask_mt.engine.checkpoint import write_atomic
from xtask_mt.errors import UserError

HYDRA_DIR = ".hydra"
# a finished job's copy of its .hydra/*.yaml, which a refused later run restores from
FINISHED_COPY = "finished"


class FinishedJobError(UserError):
    """A run refused a folder that holds a finished job, whose files must stay as they are."""


def read_job_config(output_dir: Path) -> dict[Path, bytes]:
    """The job's .hydra/*.yaml as they are now (as Hydra wrote them when a job starts)."""
    return {p: p.read_bytes() for p in sorted((output_dir / HYDRA_DIR).glob("*.yaml"))}


def restore_job_config(saved: dict[Path, bytes]) -> None:
    """Put back .hydra/*.yaml that a refused process overwrote."""
    for path, text in saved.items():
        try:
            if path.read_bytes() == text:
                continue
        except OSError:
            pass
        write_atomic(path, lambda f, text=text: f.write(text))


def keep_finished_copy(output_dir: Path) -> None:
    """Copy a finished job's .hydra/*.yaml into .hydra/finished/ (the next run overwrites
    the originals before it can be refused)."""
    copy = output_dir / HYDRA_DIR / FINISHED_COPY
    copy.mkdir(parents=True, exist_ok=True)
    for path in read_job_config(output_dir):
        shutil.copyfile(path, copy / path.name)


def restore_finished_copy(output_dir: Path) -> None:
    """Put back the .hydra/*.yaml of the finished job in `output_dir` (none kept: nothing)."""
    copy = output_dir / HYDRA_DIR / FINISHED_COPY
    restore_job_config({output_dir / HYDRA_DIR / p.name: p.read_bytes()
                        for p in sorted(copy.glob("*.yaml"))})
