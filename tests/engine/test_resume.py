"""Interrupted training resumes without loss: SIGKILL mid-epoch, SIGTERM, bad checkpoints."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.config import ROOT, TINY, compose_config

from xtask_mt.engine.checkpoint import CheckpointError, load_checkpoint
from xtask_mt.engine.trainer import train

RUN = TINY + ["trainer.epochs=3", "dataset.train_size=24", "dataset.val_size=4"]


def _command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "train.py", *RUN, f"hydra.run.dir={run_dir}", *extra]


# train.py with every rename of a finished temp file delayed, so that a kill can land while
# a checkpoint is being written (its temp file complete, not yet in place)
_SLOW_WRITES = ("import os, runpy, sys, time; rename = os.replace; "
                "os.replace = lambda a, b: (time.sleep(0.5), rename(a, b))[1]; "
                "sys.argv = ['train.py', *sys.argv[1:]]; "
                "runpy.run_path('train.py', run_name='__main__')")


def _start_and_signal(run_dir: Path, sig: int, delay: float, inside_write: int = 0,
                      extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start a run, wait for its first checkpoint (epoch 1 done), then signal it in epoch 2
    after `delay` s; or, with `inside_write=n`, signal it while the n-th checkpoint temp file
    waits to be renamed into place."""
    command = _command(run_dir, *extra)
    if inside_write:
        command = [sys.executable, "-c", _SLOW_WRITES, *command[2:]]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    seen: set[str] = set()
    while len(seen) < inside_write if inside_write else not last.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "no checkpoint appeared"
        seen |= {p.name for p in (run_dir / "checkpoints").glob(".*.tmp")}
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(sig)
    return proc


def _finish(run_dir: Path) -> dict:
    result = subprocess.run(_command(run_dir), cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    return _finish(tmp_path_factory.mktemp("uninterrupted"))


def _assert_same_metrics(got: dict, expected: dict) -> None:
    assert got["final"].keys() == expected["final"].keys()
    for key, value in expected["final"].items():
        assert got["final"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert got["best_epoch"] == expected["best_epoch"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_sigkill_at_random_points_then_resume_matches_uninterrupted(tmp_path, uninterrupted,
                                                                    seed):
    """kill -9 inside a checkpoint write (seeds 0, 1: the 1st and 3rd temp file) or at a
    random moment of epoch 2 (seed 2; any moment there resumes from epoch 1's last.pt, so
    more moments take the same path); the resumed job's files agree with each other and it
    ends as an uninterrupted one does."""
    rng = random.Random(seed)
    inside = {0: 1, 1: 3}.get(seed, 0)
    proc = _start_and_signal(tmp_path, signal.SIGKILL, delay=0.0 if inside else
                             rng.uniform(0.0, 1.5), inside_write=inside)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    resumed = _finish(tmp_path)
    assert resumed["epochs_run"] == [1, 2, 3]  # each epoch once, over the kill and the resume
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    _assert_same_metrics(resumed, uninterrupted)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert best["epoch"] == resumed["best_epoch"] == last["progress"]["best_epoch"]
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_sigterm_writes_resumable_checkpoint_and_exits_cleanly(tmp_path, uninterrupted):
    proc = _start_and_signal(tmp_path, signal.SIGTERM, delay=0.05,
                             extra=("trainer.progress_bar=true",))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    # the progress bar is closed (its line cleared) before the error line is printed
    error_line = next(line for line in stderr.splitlines() if "stopped by SIGTERM" in line)
    assert error_line.split("\r")[-1].startswith("error: stopped by SIGTERM"), error_line
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["epoch"] < 3  # stopped early, inside epoch 2 or right after epoch 1
    resumed = _finish(tmp_path)
    _assert_same_metrics(resumed, uninterrupted)


STOPPED = TINY + ["trainer.epochs=2", "dataset.train_size=16", "dataset.val_size=4"]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> dict:
    return train(compose_config(STOPPED), tmp_path_factory.mktemp("plain"))


def _signal_at_step(monkeypatch, step: int, sig: int = signal.SIGTERM) -> dict[str, int]:
    """Send `sig` to this process during training step `step` (1-based, over all epochs);
    count the validation passes."""
    from xtask_mt.engine import trainer
    from xtask_mt.losses import TaskObjective

    original, validation = TaskObjective.__call__, trainer._validation_figures
    calls = {"steps": 0, "validations": 0}

    def signalling(self, out, batch):
        if out["seg"].requires_grad:
            calls["steps"] += 1
            if calls["steps"] == step:
                os.kill(os.getpid(), sig)
        return original(self, out, batch)

    def counted(run):
        calls["validations"] += 1
        return validation(run)

    monkeypatch.setattr(TaskObjective, "__call__", signalling)
    monkeypatch.setattr(trainer, "_validation_figures", counted)
    return calls


def _assert_same_history(got: dict, expected: dict) -> None:
    """Train and validation figures of every epoch, the resumed epoch's included."""
    assert len(got["history"]) == len(expected["history"])
    for mine, theirs in zip(got["history"], expected["history"], strict=True):
        for key, value in theirs.items():
            if key.startswith(("train/", "val/")):
                assert mine[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_inside_an_epoch_resumes_at_that_step(tmp_path, monkeypatch, plain_run,
                                                          sig, code):
    """In-process: SIGTERM (or Ctrl-C) arrives at step 2 of epoch 2; the checkpoint records
    the step and the running sums, and the resumed run ends exactly where an uninterrupted
    one does, the resumed epoch's train figures included."""
    from xtask_mt.runtime.preemption import TrainingInterrupted

    _signal_at_step(monkeypatch, 6, sig)  # 4 steps per epoch: the 2nd step of epoch 2
    with pytest.raises(TrainingInterrupted, match="in epoch 2 after step 2/4") as stopped:
        train(compose_config(STOPPED), tmp_path)
    assert stopped.value.exit_code == code
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert (state["epoch"], state["progress"]["step_in_epoch"]) == (1, 2)
    monkeypatch.undo()
    resumed = train(compose_config(STOPPED), tmp_path)
    _assert_same_metrics(resumed, plain_run)
    _assert_same_history(resumed, plain_run)


def test_a_stop_during_the_last_step_skips_validation_until_the_resume(tmp_path, monkeypatch,
                                                                       plain_run):
    from xtask_mt.runtime.preemption import TrainingInterrupted

    calls = _signal_at_step(monkeypatch, 4)  # the last step of epoch 1
    with pytest.raises(TrainingInterrupted, match="in epoch 1 after step 4/4"):
        train(compose_config(STOPPED), tmp_path)
    assert calls["validations"] == 0
    monkeypatch.undo()
    resumed = train(compose_config(STOPPED), tmp_path)
    assert resumed["epochs_run"] == [1, 2]
    _assert_same_metrics(resumed, plain_run)
    _assert_same_history(resumed, plain_run)


def test_resume_refuses_checkpoint_of_another_model(tmp_path):
    train(compose_config(TINY), tmp_path)
    other = compose_config(TINY + ["model.transfer.wider=true", "trainer.epochs=2"])
    with pytest.raises(CheckpointError, match=r"model.transfer.wider: checkpoint=False, "
                                              r"config=True"):
        train(other, tmp_path)


def test_resume_reports_truncated_checkpoint_by_path(tmp_path):
    train(compose_config(TINY), tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=str(last)):
        train(compose_config(TINY + ["trainer.epochs=2"]), tmp_path)


def test_resume_from_explicit_path_and_missing_path(tmp_path):
    train(compose_config(TINY), tmp_path / "a")
    ckpt = tmp_path / "a" / "checkpoints" / "last.pt"
    summary = train(compose_config(TINY + ["trainer.epochs=2", f"trainer.resume={ckpt}"]),
                    tmp_path / "b")
    assert summary["epochs_run"] == [1, 2]  # epoch 1 in the checkpoint, 2 trained here
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(compose_config(TINY + [f"trainer.resume={tmp_path / 'nope.pt'}"]), tmp_path / "c")


def test_skip_nonfinite_counts_batches_and_keeps_training(tmp_path, monkeypatch):
    from xtask_mt.losses import TaskObjective

    original = TaskObjective.__call__
    calls = {"n": 0}

    def poisoned(self, out, batch):
        result = original(self, out, batch)
        if out["seg"].requires_grad:
            calls["n"] += 1
            if calls["n"] == 1:
                result.tasks["seg"] = result.tasks["seg"] * float("inf")
        return result

    monkeypatch.setattr(TaskObjective, "__call__", poisoned)
    summary = train(compose_config(TINY + ["trainer.skip_nonfinite=true"]), tmp_path)
    assert summary["skipped_nonfinite"] == 1
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("changed,named", [
    (["loss.alpha=0.5"], "loss.alpha: checkpoint=0.01, config=0.5"),
    (["optimizer.lr=1000000.0"], "optimizer.lr: checkpoint=0.0001, config=1000000.0"),
])
def test_resume_refuses_a_checkpoint_trained_with_other_settings(tmp_path, changed, named):
    """A re-run sweep whose values moved to other job folders, or an optimiser override, must
    not continue another job's training under new settings without a word."""
    train(compose_config(TINY), tmp_path)
    with pytest.raises(CheckpointError, match=f"other settings.*{named}"):
        train(compose_config(TINY + ["trainer.epochs=2", *changed]), tmp_path)
    # how long to train, and how the job is watched, may change
    summary = train(compose_config(TINY + ["trainer.epochs=2", "trainer.progress_bar=false",
                                           "dataset.num_workers=1"]), tmp_path)
    assert summary["epochs_run"] == [1, 2]


def test_a_model_spec_written_before_edges_means_the_seed_edges():
    from xtask_mt.config.build import LEGACY_MODEL_SETTINGS
    from xtask_mt.engine.checkpoint import check_model_spec

    legacy = {f"model.{key}": value for key, value in LEGACY_MODEL_SETTINGS.items()}
    old = {"model.transfer.enabled": True}
    seed = {"model.transfer.enabled": True,
            "model.transfer.edges": [["seg", "depth"], ["depth", "seg"]], **legacy}
    check_model_spec(Path("old.pt"), old, seed)
    with pytest.raises(CheckpointError, match="model.transfer.edges"):
        check_model_spec(Path("old.pt"), old, {**seed, "model.transfer.edges": [["seg", "depth"]]})
    check_model_spec(Path("old.pt"), {"model.transfer.enabled": False},
                     {"model.transfer.enabled": False, "model.transfer.edges": [], **legacy})
