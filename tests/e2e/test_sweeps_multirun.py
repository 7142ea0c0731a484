"""Real sweeps through train.py -m: W&B runs per job, failures, resuming, Optuna, joblib."""

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
from helpers.wandb_files import offline_runs
from omegaconf import OmegaConf

from xtask_mt.engine.checkpoint import load_checkpoint
from xtask_mt.reports.sweep import load_sweep, write_report

pytestmark = pytest.mark.slow


def run_train(*args: str) -> subprocess.CompletedProcess:
    # one thread per job: tiny models gain nothing from more, and jobs share the CPU
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def metrics(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


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


def test_optuna_search_returns_the_best_trial(tmp_path: Path) -> None:
    sweep = tmp_path / "optuna"
    done = run_train("-cd", "sweeps", "-cn", "optuna_alpha_gamma", *tiny_overrides(),
                     "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    trials = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert [t.name.split("_")[0] for t in trials] == ["0", "1"]
    values = [metrics(t)["best"]["val/miou"] for t in trials]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(values))
    alphas = [yaml.safe_load((t / ".hydra" / "config.yaml").read_text())["loss"]["alpha"]
              for t in trials]
    assert alphas[0] != alphas[1] and all(1e-5 <= a <= 0.3 for a in alphas)
    assert 1e-5 <= result["best_params"]["loss.alpha"] <= 0.3


def test_the_same_command_again_continues_the_study_in_its_database(tmp_path: Path) -> None:
    """Two invocations of 2 trials into one sweep dir: one sqlite study of 4 trials numbered
    0..3, four trial folders, no job skipped as already finished."""
    import optuna

    sweep = tmp_path / "optuna"
    args = ["-cd", "sweeps", "-cn", "optuna_alpha_gamma", *tiny_overrides(),
            "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"]
    for _ in range(2):
        done = run_train(*args)
        assert done.returncode == 0, done.stderr[-3000:]
        time.sleep(1.1)  # the folders of a re-run carry its start time (to the second)
    study = optuna.load_study(study_name="alpha_gamma", storage=f"sqlite:///{sweep}/optuna.db")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    folders = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(folders) == 4
    logs = "".join((f / "train.log").read_text() for f in folders)
    assert "already finished" not in logs
    values = sorted(t.value for t in study.trials)
    assert values == pytest.approx(sorted(metrics(f)["best"]["val/miou"] for f in folders))


def test_two_processes_share_one_study_on_a_postgresql_server(tmp_path: Path) -> None:
    """Two searches of 2 trials started at once against one PostgreSQL study (as two
    machines would, after the study was created once, as README says): the study holds 4
    trials, numbered once each, and every trial ran in exactly one job folder with the
    parameters the study recorded."""
    import optuna
    from helpers.postgres import postgres_server

    with postgres_server() as url:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
               "HYDRA_FULL_ERROR": "1"}
        # two processes that both find an empty database race to create its tables
        optuna.create_study(storage=url, study_name="alpha_gamma", direction="maximize")
        procs = [subprocess.Popen(
            [sys.executable, "train.py", "-cd", "sweeps", "-cn", "optuna_alpha_gamma",
             *tiny_overrides(), "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={url}",
             f"hydra.sweep.dir={tmp_path / f'host{i}'}"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        for proc in procs:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
        study = optuna.load_study(study_name="alpha_gamma", storage=url)
        trials = study.trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    folders = sorted(p.parent for p in tmp_path.glob("host*/*/metrics.json"))
    assert len(folders) == 4
    ran = sorted(round(yaml.safe_load((f / ".hydra" / "config.yaml").read_text())["loss"]
                       ["alpha"], 12) for f in folders)
    assert ran == sorted(round(t.params["loss.alpha"], 12) for t in trials)


def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    """alpha sampled in [0.5, 1.5]: trials above 1 are refused by validation (failed), the
    others finish, and the best value is the best finished trial's."""
    sweep = tmp_path / "optuna"
    done = run_train("-cd", "sweeps", "-cn", "optuna_alpha_gamma", *tiny_overrides(),
                     'hydra.sweeper.params={loss.alpha:"interval(0.5,1.5)",'
                     'loss.gamma:"interval(0.001,0.01)"}', "hydra.sweeper.n_trials=4",
                     f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    status = {job.name: json.loads((job / "job.json").read_text())["status"]
              for job in sweep.iterdir() if (job / "job.json").is_file()}
    assert len(status) == 4
    assert "failed" in status.values() and "finished" in status.values()
    finished = [metrics(sweep / name)["best"]["val/miou"] for name, s in status.items()
                if s == "finished"]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(finished))


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


def test_a_two_objective_search_and_the_report_agree_on_the_pareto_front(
        tmp_path: Path) -> None:
    """optuna_pareto with 4 trials: each trial returned (miou, abs_err) of its kept
    checkpoint; Optuna's Pareto solutions are the jobs on the report's front."""
    from xtask_mt.reports.pareto import pareto_front

    sweep = tmp_path / "pareto"
    done = run_train("-cd", "sweeps", "-cn", "optuna_pareto", *tiny_overrides(),
                     "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    solutions = sorted(round(s["params"]["loss.alpha"], 12) for s in result["solutions"])
    jobs = [r for r in load_sweep(sweep) if r.status == "finished"]
    assert len(jobs) == 4 and all(r.objectives == ("val/miou", "val/abs_err") for r in jobs)
    front = pareto_front(jobs, ("val/miou", "val/abs_err"))
    alphas = sorted(round(yaml.safe_load((sweep / r.job / ".hydra" / "config.yaml")
                                         .read_text())["loss"]["alpha"], 12) for r in front)
    assert alphas == solutions
    for solution in result["solutions"]:  # the values Optuna got are the kept checkpoint's
        assert any(solution["values"] == pytest.approx([r.best["val/miou"],
                                                        r.best["val/abs_err"]]) for r in front)
    written = write_report(sweep)
    assert "## Pareto front" in written["markdown"].read_text() and "pareto" in written


def test_an_objective_the_job_does_not_report_is_refused_before_any_trial(
        tmp_path: Path) -> None:
    """val/normal_mean on a two-task job: one line naming it and what the job reports, exit
    2, no trial; an edge's consistency metric is accepted as an objective."""
    sweep = tmp_path / "pareto"
    refused = run_train("-cd", "sweeps", "-cn", "optuna_pareto", *tiny_overrides(),
                        "search.objectives=[val/miou,val/normal_mean]",
                        "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}")
    assert refused.returncode == 2, refused.stderr[-2000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: search.objectives: val/normal_mean is not a validation "
                           "metric of this job")
    assert "val/consistency_seg_to_depth" in line and "Traceback" not in refused.stderr
    assert not list(sweep.glob("*/job.json"))
    accepted = run_train("-cd", "sweeps", "-cn", "optuna_pareto", *tiny_overrides(),
                         "search.objectives=[val/miou,val/consistency_seg_to_depth]",
                         "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path / 'ok'}")
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    statuses = [json.loads(p.read_text())["status"] for p in (tmp_path / "ok").glob("*/job.json")]
    assert statuses == ["finished"]


def test_a_search_whose_every_trial_fails_ends_with_one_line(tmp_path: Path) -> None:
    """optimizer.lr=-1 fails every trial: each is recorded FAIL in the study and in its
    job.json, and the command ends with one line (exit 1), not Optuna's traceback."""
    import optuna

    sweep = tmp_path / "optuna"
    done = run_train("hparams_search=optuna", *tiny_overrides(), "optimizer.lr=-1",
                     "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no trial of study 'alpha_gamma' completed: the 2 trials")
    assert "Record does not exist" not in done.stderr
    status = [json.loads(p.read_text())["status"] for p in sweep.glob("*/job.json")]
    assert status == ["failed", "failed"]
    study = optuna.load_study(study_name="alpha_gamma", storage=f"sqlite:///{sweep}/optuna.db")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 2
