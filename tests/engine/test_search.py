"""What train.py returns to a search: one monitor value or one value per objective."""

from __future__ import annotations

import math

import pytest
from helpers.config import TINY, compose_config
from omegaconf import OmegaConf

from xtask_mt.engine.search import UnmeasuredObjectiveError, objective_directions, search_result
from xtask_mt.errors import ConfigError

SUMMARY = {"best": {"val/miou": 0.4, "val/abs_err": 0.2}, "final": {"val/miou": 0.3}}


THREE_TASKS = compose_config(TINY + ["model.tasks=[seg,depth,normal]"])


def test_directions_follow_each_metric() -> None:
    assert objective_directions(["val/miou", "val/abs_err", "val/normal_within_11"],
                                THREE_TASKS) == ["maximize", "minimize", "maximize"]
    assert objective_directions(["val/miou", "val/consistency_seg_to_depth"],
                                compose_config(TINY)) == ["maximize", "minimize"]


@pytest.mark.parametrize("objectives, message", [
    (["val/miou", "val/miuo"], "val/miuo is not a validation metric of this job"),
    (["val/miou", "val/normal_mean"], "val/normal_mean is not a validation metric"),
    (["val/miou", "val/consistency"], "val/consistency is not a validation metric"),
    (["val/miou"], "two or more"),
    (["val/miou", "val/miou"], "two or more different"),
])
def test_objectives_the_job_cannot_report_are_refused(objectives: list[str],
                                                       message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        objective_directions(objectives, compose_config(TINY))
    if "not a validation metric" in message:  # the list offered holds what the job reports
        offered = str(refused.value).split("choose from ")[1].split(", ")
        assert "val/consistency_seg_to_depth" in offered and "val/consistency" not in offered
        assert "val/normal_mean" not in offered


def test_single_objective_returns_the_best_monitor_value() -> None:
    cfg = OmegaConf.create({"trainer": {"monitor": "val/miou"}})
    assert search_result(cfg, SUMMARY) == 0.4
    cfg.trainer.monitor = "val/rmse"
    assert math.isnan(search_result(cfg, SUMMARY))


def test_objectives_return_the_best_checkpoints_values() -> None:
    cfg = OmegaConf.create({"trainer": {"monitor": "val/miou"},
                            "search": {"objectives": ["val/abs_err", "val/miou"]}})
    assert search_result(cfg, SUMMARY) == [0.2, 0.4]


def test_an_objective_without_a_value_fails_the_trial() -> None:
    """A NaN handed to Optuna among several values ends the whole search; the job fails
    instead, which the study records as a failed trial."""
    cfg = OmegaConf.create({"trainer": {"monitor": "val/miou"},
                            "search": {"objectives": ["val/abs_err", "val/rmse"]}})
    with pytest.raises(UnmeasuredObjectiveError, match="val/rmse has no value"):
        search_result(cfg, SUMMARY)
    cfg.search.objectives = ["val/abs_err", "val/miou"]
    nan = {"best": {"val/miou": math.nan, "val/abs_err": 0.2}}
    with pytest.raises(UnmeasuredObjectiveError, match="val/miou has no value"):
        search_result(cfg, nan)
