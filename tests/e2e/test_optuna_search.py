"""Optuna searches through train.py (hparams_search=...): the best trial and the Pareto front,
a study continued by the same command or shared by two processes, failed trials, the failure
budget, and the one-line refusals of a search that cannot start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import yaml
from helpers.config import ROOT
from helpers.sweep_settings import tiny_overrides
from helpers.train_cli import metrics, run_train

from xtask_mt.reports.sweep import load_sweep, write_report

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


@contextmanager
def dashboard(storage: str):
    """optuna-dashboard serving `storage` on a free localhost port: yields its base URL."""
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"), storage,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get_json(f"{base}/api/studies")
                break
            except OSError:
                assert server.poll() is None, server.communicate()[0][-2000:]
                assert time.monotonic() < deadline, "optuna-dashboard did not answer in 60 s"
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def _alphas(folders: list[Path]) -> list[float]:
    return [yaml.safe_load((f / ".hydra" / "config.yaml").read_text())["loss"]["alpha"]
            for f in folders]


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
    # the running study as optuna-dashboard shows it, read over HTTP
    with dashboard(f"sqlite:///{sweep}/optuna.db") as base:
        studies = _get_json(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["alpha_gamma"]
        shown = _get_json(f"{base}/api/studies/{studies[0]['study_id']}?after=0")["trials"]
    assert [t["state"] for t in shown] == ["Complete", "Complete"]
    assert [t["values"][0] for t in shown] == pytest.approx(values)


def test_the_same_command_again_continues_the_study_in_its_database(tmp_path: Path) -> None:
    """Two invocations of 2 trials into one sweep dir: one sqlite study of 4 trials numbered
    0..3, four trial folders, no job skipped as already finished."""
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
    # each run seeds trial n with sampler.seed + n: the second run drew new points
    assert len(set(_alphas(folders))) == 4


def test_two_processes_share_one_study_on_a_postgresql_server(tmp_path: Path) -> None:
    """Two searches of 2 trials started at once against one PostgreSQL study (as two
    machines would, after the study was created once, as README says): the study holds 4
    trials, numbered once each, and every trial ran in exactly one job folder with the
    parameters the study recorded."""
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
    ran = sorted(round(alpha, 12) for alpha in _alphas(folders))
    assert ran == sorted(round(t.params["loss.alpha"], 12) for t in trials)
    assert len(set(ran)) == 4  # the two processes, seeded alike, drew different points


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



def test_the_failure_budget_stops_the_search_and_keeps_the_finished_trials(
        tmp_path: Path) -> None:
    """10 trials of which every other one is refused (loss.alpha=2.0 fails validation; the
    points are enqueued in the study, so the order is known), budget 3: the search stops
    right after the third failure with one line naming the failed trials, exit 1; the study
    keeps every trial it ran, the completed ones with their values."""
    sweep = tmp_path / "optuna"
    sweep.mkdir()
    study = optuna.create_study(study_name="alpha_gamma", direction="maximize",
                                storage=f"sqlite:///{sweep}/optuna.db")
    for alpha in [0.01, 2.0] * 5:
        study.enqueue_trial({"loss.alpha": alpha})
    done = run_train("hparams_search=optuna", *tiny_overrides(), "hydra.sweeper.n_trials=10",
                     "hydra.sweeper.max_failures=3", "loss.gamma=0.01",
                     "loss.alpha=choice(0.01,2.0)",
                     f"hydra.sweep.dir={sweep}")
    assert done.returncode == 1, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the failure budget of study 'alpha_gamma' is spent "
                           "(hydra.sweeper.max_failures=3): 3 of its ")
    assert "Traceback" not in done.stderr
    study = optuna.load_study(study_name="alpha_gamma", storage=f"sqlite:///{sweep}/optuna.db")
    states = [t.state for t in study.trials]
    ran = states[:6]  # the 4 trials after the third failure stay WAITING in the queue
    assert ran == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL] * 3
    assert set(states[6:]) == {optuna.trial.TrialState.WAITING}
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    for trial in failed:  # each named, with its folder and the reason
        assert f"trial {trial.number} (" in line
        assert trial.params["loss.alpha"] == 2.0 and "ConfigError" in trial.user_attrs["error"]
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert completed and all(t.params["loss.alpha"] == 0.01 for t in completed)
    for trial in completed:
        assert trial.value == pytest.approx(
            metrics(Path(trial.user_attrs["job_dir"]))["best"]["val/miou"])
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(t.value for t in completed))


def test_a_studied_parameter_searched_another_way_is_refused_before_any_trial(
        tmp_path: Path) -> None:
    """A study whose trials sampled loss.alpha on a log scale, continued with a linear
    interval: one line naming both, exit 2, and no trial added (none left RUNNING)."""
    sweep = tmp_path / "optuna"
    sweep.mkdir()
    storage = f"sqlite:///{sweep}/optuna.db"
    study = optuna.create_study(study_name="alpha_gamma", storage=storage,
                                direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"loss.alpha": 0.01}, value=0.5,
        distributions={"loss.alpha": optuna.distributions.FloatDistribution(
            1e-5, 0.3, log=True)}))
    done = run_train("hparams_search=optuna", *tiny_overrides(), "hydra.sweeper.n_trials=1",
                     "loss.alpha=interval(0.0,0.3)",
                     f"hydra.sweep.dir={sweep}")
    assert done.returncode == 2, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: search space: loss.alpha=interval(0.0, 0.3) cannot "
                           "continue study 'alpha_gamma', whose trials sampled loss.alpha as "
                           "tag(log, interval(1e-05, 0.3))")
    assert "Traceback" not in done.stderr
    trials = optuna.load_study(study_name="alpha_gamma", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE]


@pytest.mark.parametrize("storage", ["random_bytes", "closed_port"])
def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path: Path, storage: str) -> None:
    if storage == "random_bytes":
        db = tmp_path / "optuna.db"
        db.write_bytes(os.urandom(4096))
        url, named = f"sqlite:///{db}", f"hydra.sweeper.storage=sqlite:///{db}: "
    else:
        port = _free_port()
        url = f"postgresql://user:secret@127.0.0.1:{port}/optuna"
        named = f"hydra.sweeper.storage=postgresql://user:***@127.0.0.1:{port}/optuna: "
    done = run_train("hparams_search=optuna", *tiny_overrides(), "hydra.sweeper.n_trials=1",
                     f"hydra.sweeper.storage={url}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert done.returncode == 2, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {named}cannot open the study's database")
    assert "Traceback" not in done.stderr and "secret" not in done.stderr
    assert not list(tmp_path.glob("sweep/*/job.json"))


def test_a_search_stopped_by_a_signal_leaves_no_trial_running(tmp_path: Path) -> None:
    """SIGTERM during the first trial: the job saves its checkpoint and the search ends
    (exit 143); the study records the trial as failed and interrupted, not RUNNING, and the
    failure budget does not count it."""
    sweep = tmp_path / "optuna"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "offline"}
    proc = subprocess.Popen(
        [sys.executable, "train.py", "hparams_search=optuna",
         *tiny_overrides(**{"trainer.epochs": 3, "dataset.train_size": 24}),
         "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failures=1", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(sweep.glob("0_*/checkpoints/last.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    trials = optuna.load_study(study_name="alpha_gamma",
                               storage=f"sqlite:///{sweep}/optuna.db").trials
    assert [(t.state, t.user_attrs.get("interrupted")) for t in trials] == [
        (optuna.trial.TrialState.FAIL, True)]
    # the same command again is not stopped by the budget of one failure
    again = run_train("hparams_search=optuna", *tiny_overrides(), "hydra.sweeper.n_trials=1",
                      "hydra.sweeper.max_failures=1", f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr[-2000:]
