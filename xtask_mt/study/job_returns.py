"""What the sweepers say about a job that failed: its folder, its error in one line, and a
traceback in the log only when the error is a bug rather than the user's input."""

from __future__ import annotations

import logging

from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from xtask_mt.errors import UserError

log = logging.getLogger(__name__)


def job_dir(job: JobReturn) -> str:
    """The job's output folder, or its overrides when Hydra did not get as far."""
    output_dir = OmegaConf.select(job.hydra_cfg or {}, "hydra.runtime.output_dir")
    return str(output_dir) if output_dir else " ".join(job.overrides or [])


def describe(job: JobReturn) -> str:
    """`<folder>: <ErrorType>: <first line of its message>`."""
    error = job._return_value
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    return f"{job_dir(job)}: {text}"


def log_if_bug(job: JobReturn) -> None:
    """A failed job's traceback goes to the log when its error is a bug; a user error says
    all in its one line, which the sweeper prints."""
    if not isinstance(job._return_value, UserError):
        log.error("job %s failed", job_dir(job), exc_info=job._return_value)
