"""End-to-end training on tiny synthetic data: outputs, checkpoints, learning, guards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers.config import ROOT, TINY, compose_config

from xtask_mt.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from xtask_mt.engine.evaluate_run import EvalOptions, evaluate_run
from xtask_mt.engine.step import NonFiniteLossError
from xtask_mt.engine.trainer import train
from xtask_mt.losses import TaskObjective


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty", "gradnorm"])
def test_train_writes_checkpoints_and_metrics(tmp_path, weighting):
    cfg = compose_config(TINY + [f"weighting={weighting}", "trainer.epochs=2"])
    summary = train(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(summary))
    for key in ("val/miou", "val/pixacc", "val/miou_legacy", "val/pixacc_legacy",
                "val/abs_err", "val/abs_rel", "val/rmse", "val/delta1", "val/delta2",
                "val/delta3", "val/consistency_seg_to_depth", "val/consistency_depth_to_seg"):
        assert key in metrics["final"] and key in metrics["best"]
    assert metrics["best"]["val/miou"] >= metrics["final"]["val/miou"]
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["epoch"] == 2
    assert last["config"]["weighting"]["name"] == weighting
    assert set(last) >= {"model", "optimizer", "scheduler", "weighting", "epoch", "config"}
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    if weighting == "gradnorm":
        assert bool(last["weighting"]["initialised"])
    weights = {k: v for k, v in metrics["train"].items() if k.startswith("task_")}
    assert set(weights) == {"task_seg", "task_depth"}


@pytest.mark.slow
def test_training_improves_over_untrained_model(tmp_path):
    """A few epochs on synthetic scenes lift mIoU well above the untrained model's."""
    overrides = ["encoder=resnet18", "dataset.height=32", "dataset.width=64",
                 "dataset.train_size=32", "dataset.val_size=16", "trainer.device=cpu",
                 "trainer.progress_bar=false", "optimizer.lr=0.0003", "model.decoder_width=16"]
    trained = train(compose_config(overrides + ["trainer.epochs=6", "trainer.val_at_start=true"]),
                    tmp_path)
    untrained = trained["initial"]
    assert trained["best"]["val/miou"] > untrained["val/miou"] + 0.1
    assert trained["best"]["val/abs_err"] < untrained["val/abs_err"]


def test_evaluate_reproduces_training_metrics(tmp_path):
    cfg = compose_config(TINY)
    summary = train(cfg, tmp_path)
    (tmp_path / ".hydra").mkdir()
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    result = evaluate_run(tmp_path, checkpoint="last",
                          options=EvalOptions(device="cpu", progress_bar=False))
    for key, value in summary["final"].items():
        assert result["metrics"][key] == pytest.approx(value, rel=1e-5), key
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_non_finite_loss_stops_training_and_keeps_checkpoint(tmp_path, monkeypatch):
    cfg = compose_config(TINY + ["trainer.epochs=2", "dataset.train_size=4"])
    original = TaskObjective.__call__
    calls = {"n": 0}

    def poisoned(self, out, batch):
        result = original(self, out, batch)
        calls["n"] += 1
        if calls["n"] > 2 and out["seg"].requires_grad:  # after epoch 1's training step
            result.terms["depth"] = result.terms["depth"] * float("nan")
            result.tasks["depth"] = result.terms["depth"]
        return result

    monkeypatch.setattr(TaskObjective, "__call__", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 1: depth"):
        train(cfg, tmp_path)
    kept = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert kept["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_checkpoint_save_is_atomic_and_load_refuses_bad_files(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"epoch": 1})
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an xtask-mt checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_train_py_runs_from_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", *TINY, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "metrics.json").is_file()
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
