"""SIGTERM / SIGUSR1 (what SLURM sends before preemption) and SIGINT (Ctrl-C) become a
request to stop at the next safe point, so the job can write a checkpoint before it exits.
A second Ctrl-C stops at once."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from xtask_mt.errors import UserError

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def signal_name(signum: int | None) -> str:
    return signal.Signals(signum).name if signum else "a stop signal"


class TrainingInterrupted(UserError):
    """Training stopped on a signal after writing a resumable checkpoint."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum  # the shell's convention for "ended by signal N"


class StopRequest:
    """Context manager that records a stop signal instead of dying on it.

    Handlers are only installed in the main thread (signals cannot be caught elsewhere).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: the user does not want to wait
        if self.signum is None:
            log.warning("received %s: stopping after the current step (under DDP within "
                        "trainer.sync_every steps)", signal_name(signum))
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None
