"""trainer.early_stopping: a run whose monitor stops improving stops after patience + 1
validations, says why, records it, and a resumed run carries on counting."""

from __future__ import annotations

import json

from helpers.config import TINY, compose_config

from xtask_mt.engine.early_stopping import EarlyStopping
from xtask_mt.engine.trainer import train

# min_delta beyond any change of val/miou: only the first validation counts as improving
NEVER_IMPROVES = TINY + ["dataset.train_size=4", "trainer.early_stopping.patience=2",
                         "trainer.early_stopping.min_delta=10"]


def test_improvement_needs_more_than_min_delta_in_the_monitor_direction():
    up, down = EarlyStopping(2, 0.1, "max"), EarlyStopping(2, 0.1, "min")
    assert up.improved(0.5, None) and up.improved(0.61, 0.5) and not up.improved(0.6, 0.5)
    assert down.improved(0.39, 0.5) and not down.improved(0.45, 0.5)
    assert not up.improved(float("nan"), 0.5)
    assert up.stale_count(1, 0.55, 0.5) == 2 and up.stale_count(1, 0.7, 0.5) == 0
    assert not EarlyStopping(0).should_stop(99)  # patience 0: off
    assert EarlyStopping(2).should_stop(2) and not EarlyStopping(2).should_stop(1)


def test_run_stops_after_patience_plus_one_validations(tmp_path, caplog):
    with caplog.at_level("INFO", logger="xtask_mt"):
        summary = train(compose_config(NEVER_IMPROVES + ["trainer.epochs=6"]), tmp_path)
    assert summary["epochs_run"] == [1, 2, 3]
    assert summary["stopped_early"] == 3
    assert json.loads((tmp_path / "metrics.json").read_text())["stopped_early"] == 3
    assert "stopping early after epoch 3: val/miou has not improved by more than 10 for 2 " \
           "validations (trainer.early_stopping.patience=2)" in caplog.text


def test_resumed_run_carries_on_counting_under_the_current_patience(tmp_path):
    first = train(compose_config(NEVER_IMPROVES + ["trainer.epochs=2"]), tmp_path)
    assert "stopped_early" not in first  # one stale validation, then the last epoch
    impatient = train(compose_config(NEVER_IMPROVES + [
        "trainer.epochs=5", "trainer.early_stopping.patience=1"]), tmp_path)
    assert impatient["epochs_run"] == [1, 2] and impatient["stopped_early"] == 2
    resumed = train(compose_config(NEVER_IMPROVES + ["trainer.epochs=5"]), tmp_path)
    assert resumed["epochs_run"] == [1, 2, 3] and resumed["stopped_early"] == 3  # every resume
