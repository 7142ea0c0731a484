"""What train.py returns to a search: one monitor value or one value per objective."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from xtask_mt.engine.search import objective_directions, search_result
from xtask_mt.errors import ConfigError

SUMMARY = {"best": {"val/miou": 0.4, "val/abs_err": 0.2}, "final": {"val/miou": 0.3}}


def test_directions_follow_each_metric() -> None:
    assert objective_directions(["val/miou", "val/abs_err", "val/normal_within_11"]) == [
        "maximize", "minimize", "maximize"]


@pytest.mark.parametrize("objectives, message", [
    (["val/miou", "val/miuo"], "val/miuo is not a validation metric"),
    (["val/miou"], "two or more"),
    (["val/miou", "val/miou"], "two or more different"),
])
def test_bad_objectives_are_refused(objectives: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        objective_directions(objectives)


def test_single_objective_returns_the_best_monitor_value() -> None:
    cfg = OmegaConf.create({"trainer": {"monitor": "val/miou"}})
    assert search_result(cfg, SUMMARY) == 0.4
    cfg.trainer.monitor = "val/rmse"
    assert math.isnan(search_result(cfg, SUMMARY))


def test_objectives_return_the_best_checkpoints_values() -> None:
    cfg = OmegaConf.create({"trainer": {"monitor": "val/miou"},
                            "search": {"objectives": ["val/abs_err", "val/miou"]}})
    assert search_result(cfg, SUMMARY) == [0.2, 0.4]
