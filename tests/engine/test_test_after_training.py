"""trainer.test_after_training: the best checkpoint's figures on the test split land in
metrics.json and the tracker; a dataset without a test split is refused up front."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.config import TINY, compose_config

from xtask_mt.config.build import (
    build_dataset,
    build_loader,
    build_metrics,
    build_model,
    build_objective,
)
from xtask_mt.config.validate import validate_config
from xtask_mt.engine.checkpoint import load_checkpoint
from xtask_mt.engine.loops import evaluate
from xtask_mt.engine.trainer import train
from xtask_mt.errors import ConfigError
from xtask_mt.runtime.precision import StepOptions
from xtask_mt.tracking import Tracker

SHRUNK = TINY + ["dataset.train_size=4", "dataset.test_size=4", "trainer.epochs=2",
                 "trainer.test_after_training=true", "extras.print_config=false"]


def test_best_checkpoint_is_tested_and_logged(tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(Tracker, "log", lambda self, values, step: logged.append(values))
    cfg = compose_config(SHRUNK)
    summary = train(cfg, tmp_path)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == summary["best_epoch"]
    model = build_model(cfg, 7)
    model.load_state_dict(best["model"])
    loader = build_loader(cfg, build_dataset(cfg, "test"), train=False)
    expected = evaluate(model, loader, build_objective(cfg), build_metrics(cfg, 7, "cpu"),
                        StepOptions(torch.device("cpu")), progress_bar=False)
    assert summary["test"] == pytest.approx({f"test/{k}": v for k, v in expected.items()})
    assert logged[-1] == summary["test"]


def test_without_kept_checkpoints_the_best_epoch_is_still_tested(tmp_path):
    summary = train(compose_config(SHRUNK + ["trainer.keep_checkpoints=none", "trainer.epochs=1"]),
                    tmp_path)
    assert "test/miou" in summary["test"]
    assert not (tmp_path / "checkpoints").exists()


def test_dataset_without_a_test_split_is_refused():
    cfg = compose_config(["trainer.test_after_training=true", "dataset.splits=[train,val]"])
    with pytest.raises(ConfigError, match="trainer.test_after_training=true but "
                                          "dataset=synthetic has only the train, val splits"):
        validate_config(cfg)


def test_an_empty_synthetic_test_split_is_refused_before_training():
    cfg = compose_config(["trainer.test_after_training=true", "dataset.test_size=0"])
    with pytest.raises(ConfigError, match="invalid config value dataset.test_size=0: expected "
                                          "an integer >= 1"):
        validate_config(cfg)


def test_a_failing_test_keeps_the_trained_jobs_metrics_and_checkpoints(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("test loader broke")

    monkeypatch.setattr("xtask_mt.engine.trainer.test_best_checkpoint", broken)
    with pytest.raises(RuntimeError, match="test loader broke"):
        train(compose_config(SHRUNK + ["trainer.epochs=1"]), tmp_path)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert "val/miou" in summary["final"] and summary["best_epoch"] == 1
    assert summary["test_error"] == "RuntimeError: test loader broke" and "test" not in summary
    assert (tmp_path / "checkpoints" / "last.pt").is_file()  # the test can run again
