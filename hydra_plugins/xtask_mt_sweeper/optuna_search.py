"""The Optuna sweeper, but a search in which no trial completed ends with one line.

The plugin asks the study for its best trial after the last batch; when every trial failed
(each recorded FAIL, its job.json saying why) that question raises from deep inside Optuna
and the command ends in a traceback, without a word on what went wrong."""

from __future__ import annotations

import sys
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

# what Optuna says when asked for the best trial of a study without a completed one
_NO_COMPLETED_TRIAL = ("Record does not exist", "No trials are completed yet")


class RecordingOptunaSweeper(OptunaSweeper):
    """OptunaSweeper whose search without a completed trial exits 1 with one line."""

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return super().sweep(arguments)
        except ValueError as exc:
            if not any(text in str(exc) for text in _NO_COMPLETED_TRIAL):
                raise
            search = self.sweeper
            sweep_dir = search.config.hydra.sweep.dir if search.config is not None else "?"
            print(f"error: no trial of study {search.study_name!r} completed: the "
                  f"{search.n_trials} trials of this run failed (recorded as FAIL in the "
                  f"study); each trial's job.json under {sweep_dir} holds its error",
                  file=sys.stderr)
            sys.exit(1)
