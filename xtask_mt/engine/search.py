"""What a training job returns to a hyper-parameter search: the best value of
trainer.monitor, or, for a multi-objective search (`search.objectives`), the value of each
objective at the checkpoint trainer.monitor chose, so every point of the Pareto front is one
model that was kept."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xtask_mt.errors import ConfigError
from xtask_mt.tasks import get_task, higher_is_better, registered_tasks


def validation_metric_names() -> list[str]:
    """`val/<metric>` for every metric the registered tasks declare."""
    return sorted({f"val/{name}" for task in registered_tasks()
                   for name in get_task(task).metric_directions})


def objective_directions(objectives: Sequence[str]) -> list[str]:
    """Optuna's direction (maximize / minimize) of each objective metric, as its task
    declares it; an unknown name or fewer than two objectives is a ConfigError."""
    names = [str(o) for o in objectives]
    known = validation_metric_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"search.objectives: {', '.join(unknown)} is not a validation "
                          f"metric; choose from {', '.join(known)}")
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"search.objectives={names}: give two or more different metrics "
                          "(a single objective is trainer.monitor with hparams_search=optuna)")
    return ["maximize" if higher_is_better(n) else "minimize" for n in names]


def search_result(cfg: DictConfig, summary: dict[str, Any]) -> float | list[float]:
    """The value(s) `train.py` returns: one float, or one per `search.objectives`."""
    best = summary.get("best", {})
    objectives = OmegaConf.select(cfg, "search.objectives", default=None)
    if not objectives:
        return float(best.get(str(cfg.trainer.monitor), math.nan))
    return [float(best.get(str(name), math.nan)) for name in objectives]
