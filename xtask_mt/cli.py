"""Helpers shared by the command-line entry points."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from xtask_mt.engine.search import objective_directions
from xtask_mt.errors import UserError
from xtask_mt.runtime.preemption import TrainingInterrupted

F = TypeVar("F", bound=Callable[..., Any])


def sqlite_file(folder: str, name: str) -> str:
    """`sqlite:///<folder>/<name>`, creating `folder`: the Optuna sweeper opens its study
    database before Hydra creates the sweep dir."""
    path = Path(folder).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / name}"


# for conf/hparams_search/optuna.yaml: storage: ${sqlite_file:${hydra.sweep.dir},optuna.db}
OmegaConf.register_new_resolver("sqlite_file", sqlite_file, replace=True)
def _objective_directions(objectives: list[str], *, _root_: DictConfig) -> list[str]:
    """objective_directions for the Optuna sweeper's config, checked against the metrics the
    job reports; a wrong objective ends the command with one line (the sweeper resolves it
    before any job, outside exit_on_user_error)."""
    try:
        return objective_directions(objectives, _root_)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


# for conf/hparams_search/optuna_pareto.yaml: direction: ${objective_directions:...}
OmegaConf.register_new_resolver("objective_directions", _objective_directions, replace=True)


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def exit_on_user_error(func: F) -> F:
    """Turn a UserError into one clear line on stderr and a non-zero exit, no traceback.

    In a multirun the error is re-raised instead, so the launcher records the job as failed
    and the sweep's other jobs carry on; but a stop signal stops the whole sweep (SystemExit
    passes through the launcher), each started job having written its checkpoint.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            if _in_multirun() and not isinstance(exc, TrainingInterrupted):
                raise
            print(f"error: {exc}", file=sys.stderr)
            code = exc.exit_code if isinstance(exc, TrainingInterrupted) else 2
            sys.exit(code)

    return wrapper  # type: ignore[return-value]
