"""What a training job returns to a hyper-parameter search: the best value of
trainer.monitor, or, for a multi-objective search (`search.objectives`), the value of each
objective at the checkpoint trainer.monitor chose, so every point of the Pareto front is one
model that was kept."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xtask_mt.config.validate import validation_metric_names
from xtask_mt.errors import ConfigError, UserError
from xtask_mt.tasks import higher_is_better


def objective_directions(objectives: Sequence[str], cfg: DictConfig) -> list[str]:
    """Optuna's direction (maximize / minimize) of each objective metric, as its task
    declares it; a metric the job `cfg` does not report (another task's, an edge it lacks, a
    typo) or fewer than two objectives is a ConfigError, before any trial runs."""
    names = [str(o) for o in objectives]
    known = sorted(validation_metric_names(cfg))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"search.objectives: {', '.join(unknown)} is not a validation "
                          f"metric of this job (model.tasks={list(cfg.model.tasks)}); choose "
                          f"from {', '.join(known)}")
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"search.objectives={names}: give two or more different metrics "
                          "(a single objective is trainer.monitor with hparams_search=optuna)")
    return ["maximize" if higher_is_better(n) else "minimize" for n in names]


class UnmeasuredObjectiveError(UserError):
    """A trial's objective came out NaN: the trial fails (FAIL in the study), the search goes
    on; a NaN told to Optuna as a value would end the whole search instead."""


def search_result(cfg: DictConfig, summary: dict[str, Any]) -> float | list[float]:
    """The value(s) `train.py` returns: one float, or one per `search.objectives`; an
    objective without a number (not reported, or NaN) fails the job, so a search records
    the trial as failed."""
    best = summary.get("best", {})
    objectives = OmegaConf.select(cfg, "search.objectives", default=None)
    if not objectives:
        return float(best.get(str(cfg.trainer.monitor), math.nan))
    values = [float(best.get(str(name), math.nan)) for name in objectives]
    unmeasured = [str(n) for n, v in zip(objectives, values, strict=True) if math.isnan(v)]
    if unmeasured:
        raise UnmeasuredObjectiveError(
            f"search.objectives: {', '.join(unmeasured)} has no value at the kept checkpoint "
            "(not measured, or NaN): the trial is recorded as failed")
    return values
