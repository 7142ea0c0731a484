"""Real sweeps through train.py -m: W&B runs per job, failures, resuming, joblib (the Optuna
searches: test_optuna_search.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers.config import ROOT
from helpers.sweep_settings import tiny_overrides
from helpers.train_cli import metrics, run_train
from helpers.wandb_files import offline_runs
from omegaconf import OmegaConf

from xtask_mt.engine.checkpoint import load_checkpoint
from xtask_mt.reports.sweep import load_sweep, write_report

pytestmark = pytest.mark.slow


def test_alpha_gamma_grid_with_wandb_and_report(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = run_train("-m", *tiny_overrides(logger="wandb", **{"logger.mode": "offline",
                     "logger.samples": 0}), "loss.alpha=0,0.1", "loss.gamma=0,0.1",
                     f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]

    jobs = [sweep / str(i) for i in range(4)]
    runs = []
    for job in jobs:
        (run,) = offline_runs(job)  # one W&B run per job, inside the job's output dir
        runs.append(run)
        assert run.exit_code == 0
        saved = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "config.yaml"),
                                       resolve=True)
        assert {k: v for k, v in run.config.items() if k not in ("_wandb", "overrides")} \
            == saved
        rows = [r for r in run.history if "val/miou" in r]
        assert [r["epoch"] for r in rows] == [1]
        assert rows[0]["val/miou"] == pytest.approx(metrics(job)["final"]["val/miou"])
    assert len({r.group for r in runs}) == 1 and runs[0].group.endswith("sweep")
    assert len({r.name for r in runs}) == 4
    grid = {(r.config["loss"]["alpha"], r.config["loss"]["gamma"]) for r in runs}
    assert grid == {(0, 0), (0, 0.1), (0.1, 0), (0.1, 0.1)}
    for run in runs:  # named by the keys the sweep varies, the full overrides in the config
        assert run.name == (f"alpha={run.config['loss']['alpha']},"
                            f"gamma={run.config['loss']['gamma']}")
        assert f"loss.alpha={run.config['loss']['alpha']}" in run.config["overrides"]

    written = write_report(sweep)
    records = {r.job: r for r in load_sweep(sweep)}
    assert sorted(records) == ["0", "1", "2", "3"]
    for job in jobs:
        record = records[job.name]
        assert record.status == "finished"
        assert record.best == metrics(job)["best"] and record.final == metrics(job)["final"]
    md = written["markdown"].read_text()
    assert md.count("| finished |") == 4 and "heatmap" in written


def test_failed_job_is_visible_and_a_rerun_skips_finished_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *tiny_overrides(logger="wandb", **{"logger.mode": "offline",
            "logger.samples": 0, "dataset.num_workers": 1}),
            "trainer.monitor=val/miou,val/not_a_metric", f"hydra.sweep.dir={sweep}"]
    first = run_train(*args, "hydra/launcher=local_parallel")  # two jobs in parallel (joblib)
    assert first.returncode != 0 and "val/not_a_metric" in first.stderr
    good, bad = sweep / "0", sweep / "1"

    record = json.loads((good / "job.json").read_text())
    assert record["status"] == "finished" and record["device"] == "cpu" and "slot" not in record
    log_text = (good / "train.log").read_text()
    assert "using dataset.num_workers=0 instead of 1" in log_text
    assert re.search(r"hydra/launcher=joblib: \d+ torch thread\(s\) in this job", log_text)
    recorded = yaml.safe_load((good / ".hydra" / "config.yaml").read_text())
    assert recorded["dataset"]["num_workers"] == 0  # what the job really used
    assert recorded["trainer"]["progress_bar"] is False
    assert (good / "checkpoints" / "best.pt").is_file() and "val/miou" in metrics(good)["best"]
    (good_run,) = offline_runs(good)
    assert good_run.exit_code == 0
    failed = json.loads((bad / "job.json").read_text())
    assert failed["status"] == "failed" and "val/not_a_metric" in failed["error"]
    assert not (bad / "metrics.json").exists()
    assert offline_runs(bad) == []  # its monitor is refused before any work, W&B included

    md = write_report(sweep)["markdown"].read_text()
    assert "| failed |" in md and "| finished |" in md

    # a sweep keeps a finished job's best weights only (trainer.keep_checkpoints=auto)
    assert not (good / "checkpoints" / "last.pt").exists()
    assert "optimizer" not in load_checkpoint(good / "checkpoints" / "best.pt")
    kept = {p: p.stat().st_mtime_ns for p in (good / "metrics.json",
                                               good / "checkpoints" / "best.pt")}
    # the same sweep again (the sweep dir names it; the launcher may change): the finished
    # job is skipped, the failed one runs again
    second = run_train(*args)
    assert second.returncode != 0
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert len(offline_runs(good)) == 1 and offline_runs(bad) == []
    assert json.loads((bad / "job.json").read_text())["status"] == "failed"
    assert "already finished (metrics.json present): skipped" in (good / "train.log").read_text()


def test_a_stop_signal_ends_the_whole_sweep_and_a_rerun_continues_it(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *tiny_overrides(**{"trainer.epochs": 3, "dataset.train_size": 24}),
            "loss.alpha=0.0,0.5", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_checkpoint = sweep / "0" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not first_checkpoint.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr
    assert not (sweep / "1" / "checkpoints").exists()  # job 1 never started
    assert json.loads((sweep / "0" / "job.json").read_text())["status"] == "interrupted"
    again = run_train(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [metrics(sweep / job)["epochs"] for job in ("0", "1")] == [3, 3]
    assert "resuming from" in (sweep / "0" / "train.log").read_text()

