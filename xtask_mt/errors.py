"""The base of every error caused by the user's input (config, files, data), not by a bug.

Entry points print these as one line without a traceback and exit non-zero.
"""

from __future__ import annotations

_WORKER_MARK = "\nOriginal Traceback"


class UserError(Exception):
    """Bad input: the message says what is wrong, where, and what to do.

    A DataLoader worker re-raises an error in the main process as the same class built from
    "Caught X in DataLoader worker process N. Original Traceback ...": such a message is cut
    back to the worker's own one line.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        text = str(message)
        if text.startswith("Caught ") and _WORKER_MARK in text:
            marker = f"{type(self).__name__}: "
            last = [line for line in text.splitlines() if marker in line]
            if last:
                text = last[-1].split(marker, 1)[1]
        super().__init__(text, *args)


class ConfigError(UserError):
    """A config value outside its accepted range or choices."""
