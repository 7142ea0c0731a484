"""Re-running a sweep into folders that hold finished jobs: a refused job leaves the finished
job's files (.hydra/*.yaml, job.json) as they were, so evaluate.py and the report still read
it; failing jobs in batches of one do not stop the sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.config import ROOT
from helpers.sweep_settings import tiny_overrides

from xtask_mt.reports.sweep import load_sweep

pytestmark = pytest.mark.slow


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def job_files(job: Path) -> dict[str, bytes]:
    """What a re-run must not change: the job's .hydra/*.yaml and job.json."""
    return {p.name: p.read_bytes() for p in [*(job / ".hydra").glob("*.yaml"), job / "job.json"]}


def finished_sweep(sweep: Path, *args: str) -> Path:
    done = run("train.py", "-m", *tiny_overrides(), "loss.alpha=0.1", *args,
               f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep / "0"


def test_a_rerun_with_other_overrides_is_refused_and_leaves_the_finished_jobs_files(
        tmp_path: Path) -> None:
    job = finished_sweep(tmp_path / "sweep")
    before = job_files(job)
    refused = run("train.py", "-m", *tiny_overrides(), "loss.alpha=0.2",
                  f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert refused.returncode != 0
    assert "already holds a finished job with other overrides" in refused.stderr
    assert job_files(job) == before
    evaluated = run("evaluate.py", f"run={job}", "wandb=none")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]


def test_retraining_a_finished_job_without_last_pt_is_refused_and_it_stays_finished(
        tmp_path: Path) -> None:
    job = finished_sweep(tmp_path / "sweep")
    assert not (job / "checkpoints" / "last.pt").exists()  # a sweep keeps best weights only
    before = job_files(job)
    refused = run("train.py", "-m", *tiny_overrides(), "loss.alpha=0.1",
                  "trainer.skip_finished=false", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert refused.returncode != 0
    assert "holds a finished job whose last.pt was not kept" in refused.stderr
    assert job_files(job) == before
    assert json.loads((job / "job.json").read_text())["status"] == "finished"
    assert [r.status for r in load_sweep(tmp_path / "sweep")] == ["finished"]


def test_a_failing_job_in_batches_of_one_does_not_stop_the_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = run("train.py", "-m", *tiny_overrides(), "optimizer.lr=-1,1e-4",
               "hydra.sweeper.max_batch_size=1", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 1
    assert json.loads((sweep / "0" / "job.json").read_text())["status"] == "failed"
    assert json.loads((sweep / "1" / "job.json").read_text())["status"] == "finished"
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: 1 of 2 jobs failed: {sweep / '0'}: ConfigError: invalid config value "
        "optimizer.lr=-1: expected a positive number. Each failed job's job.json holds its error; "
        "the same command again re-runs the failed jobs and skips the finished ones")


def test_a_job_that_stopped_early_trains_on_with_a_larger_patience(tmp_path: Path) -> None:
    """Patience 1 with a min_delta nothing beats stops after epoch 2 of 4; the same sweep
    with patience 3 resumes the job (not refused as another job) and trains it to the end,
    metrics.json counting every epoch; the same patience again skips it."""
    sweep = tmp_path / "sweep"
    common = ["trainer.epochs=4", "trainer.early_stopping.min_delta=10",
              "trainer.keep_checkpoints=all"]
    job = finished_sweep(sweep, *common, "trainer.early_stopping.patience=1")
    stopped = json.loads((job / "metrics.json").read_text())
    assert stopped["stopped_early"] == 2 and stopped["epochs_run"] == [1, 2]
    again = run("train.py", "-m", *tiny_overrides(), "loss.alpha=0.1", *common,
                "trainer.early_stopping.patience=3", f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr[-3000:]
    trained_on = json.loads((job / "metrics.json").read_text())
    assert trained_on["epochs_run"] == [1, 2, 3, 4] and "stopped_early" not in trained_on
    assert [h["epoch"] for h in trained_on["history"]] == [1, 2, 3, 4]
    status = json.loads((job / "job.json").read_text())
    assert status["status"] == "finished"
    assert "trainer.early_stopping.patience=3" in status["overrides"]
    assert "lets it train on" in (job / "train.log").read_text()
