"""trainer.keep_checkpoints: what a job keeps once it finishes, and that an interrupted job
still resumes."""

from __future__ import annotations

import os
import signal

import pytest
from helpers.config import TINY, compose_config
from omegaconf import OmegaConf

from xtask_mt.engine.checkpoint import CheckpointError, load_checkpoint
from xtask_mt.engine.evaluate_run import EvalOptions, evaluate_run
from xtask_mt.engine.job_config import FinishedJobError
from xtask_mt.engine.retention import checkpoints_to_write, resolve_keep_policy
from xtask_mt.engine.trainer import train

RUN = TINY + ["trainer.epochs=2", "dataset.train_size=8", "dataset.val_size=4"]


def _stop_at_step(monkeypatch, step: int) -> None:
    """SIGTERM to this process during training step `step` (1-based, over all epochs)."""
    from xtask_mt.losses import TaskObjective

    original, seen = TaskObjective.__call__, {"steps": 0}

    def stopping(self, out, batch):
        if out["seg"].requires_grad:
            seen["steps"] += 1
            if seen["steps"] == step:
                os.kill(os.getpid(), signal.SIGTERM)
        return original(self, out, batch)

    monkeypatch.setattr(TaskObjective, "__call__", stopping)


def test_best_weights_resumes_an_interrupted_job_then_keeps_only_the_best_weights(
        tmp_path, monkeypatch):
    from xtask_mt.runtime.preemption import TrainingInterrupted

    cfg = compose_config([*RUN, "trainer.keep_checkpoints=best_weights"])
    _stop_at_step(monkeypatch, 3)  # 2 steps per epoch: the first step of epoch 2
    with pytest.raises(TrainingInterrupted):
        train(cfg, tmp_path)
    assert "optimizer" in load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    full = (tmp_path / "checkpoints" / "best.pt").stat().st_size
    monkeypatch.undo()
    summary = train(cfg, tmp_path)
    assert summary["epochs_run"] == [1, 2]  # epoch 1 before the stop, 2 after the resume
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt"]
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert set(best) >= {"model", "config", "model_spec"} and "optimizer" not in best
    assert (tmp_path / "checkpoints" / "best.pt").stat().st_size < 0.6 * full

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    result = evaluate_run(tmp_path, options=EvalOptions(device="cpu", progress_bar=False))
    assert result["metrics"]["val/miou"] == pytest.approx(summary["best"]["val/miou"], rel=1e-5)
    longer = compose_config([*RUN, "trainer.keep_checkpoints=best_weights",
                             "trainer.skip_finished=false", "trainer.epochs=3"])
    with pytest.raises(FinishedJobError, match="last.pt was not kept"):
        train(longer, tmp_path)  # not silently trained again from scratch
    again = compose_config([*RUN, f"trainer.resume={tmp_path / 'checkpoints' / 'best.pt'}"])
    with pytest.raises(CheckpointError, match="best weights only"):
        train(again, tmp_path / "other")


def test_none_keeps_no_checkpoint_once_the_job_finished(tmp_path):
    summary = train(compose_config([*RUN, "trainer.keep_checkpoints=none"]), tmp_path)
    assert not (tmp_path / "checkpoints").exists()
    assert (tmp_path / "metrics.json").is_file() and summary["best"]


def test_auto_is_all_in_a_single_run_and_every_policy_writes_last_pt_each_epoch(tmp_path):
    assert resolve_keep_policy("auto") == "all"  # no Hydra multirun here
    train(compose_config(RUN), tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert checkpoints_to_write("none", is_best=True) == ("last.pt",)
    assert checkpoints_to_write("best_weights", is_best=True) == ("best.pt", "last.pt")
