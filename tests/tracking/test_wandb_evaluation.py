"""evaluate.py on a run that training tracked in W&B: a linked eval run, read back offline."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from helpers.config import compose_config
from helpers.sweep_settings import tiny_overrides
from helpers.wandb_files import offline_runs
from omegaconf import OmegaConf

from xtask_mt.data.synthetic import CLASS_NAMES
from xtask_mt.engine.evaluate_run import EvalOptions, EvaluationError, evaluate_run
from xtask_mt.engine.trainer import train
from xtask_mt.tracking.wandb_eval import evaluation_values

OPTIONS = dict(device="cpu", progress_bar=False, panels=1)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny one-epoch run trained with logger=wandb, laid out like a train.py job."""
    cfg = compose_config(tiny_overrides(logger="wandb", logger__samples=0,
                                        logger__group="grid", dataset__test_size=4))
    job = tmp_path_factory.mktemp("tracked") / "job"
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, job / ".hydra" / "config.yaml")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        torch.set_num_threads(1)
        train(cfg, job)
    torch.set_num_threads(threads)
    return job


def _eval_runs(job: Path) -> int:
    return len(list((job / "eval").glob("wandb/offline-run-*")))


def test_evaluation_of_a_tracked_run_is_a_linked_eval_run(tracked_run: Path) -> None:
    result = evaluate_run(tracked_run, split="test", options=EvalOptions(
        **OPTIONS, latency={"warmup": 1, "iters": 2}))
    (trained,) = offline_runs(tracked_run)
    assert result["wandb"] == {"run_id": result["wandb"]["run_id"], "mode": "offline",
                               "train_run_id": trained.run_id}

    (run,) = [r for r in offline_runs(tracked_run / "eval")
              if r.run_id == result["wandb"]["run_id"]]
    assert run.exit_code == 0 and run.run_id != trained.run_id
    assert (run.job_type, run.group, run.name) == ("eval", "grid", "job eval test")
    assert run.config["train_run_id"] == trained.run_id
    assert run.config["evaluation"]["split"] == "test" and run.config["loss"]["alpha"] == 0.01
    for key, value in result["metrics"].items():
        assert run.summary[f"eval/{key}"] == pytest.approx(value), key
    assert run.summary["eval/test/latency/direct/ms_per_image_batch1"] == pytest.approx(
        result["latency"]["direct"]["ms_per_image_batch1"])
    (row,) = run.history
    table = run.table(row, "eval/test/per_class_iou")
    assert [t["class"] for t in table] == list(CLASS_NAMES)
    assert [t["iou"] for t in table] == [result["per_class_iou"][n] for n in CLASS_NAMES]
    assert row["eval/test/panels/count"] == 1
    assert row["eval/test/per_class_iou_chart/_type"] == "image-file"


def test_delta_m_and_last_k_are_logged_under_eval() -> None:
    result = {"split": "test", "epoch": 3, "metrics": {"test/miou": 0.5},
              "delta_m": {"value": 1.5},
              "latency": {"device": "cpu", "direct": {"ms_per_image_batch1": 2.0}},
              "last_k": {"k": 2, "metrics": {"val/miou": 0.4}}}
    assert evaluation_values(result) == {
        "eval/test/miou": 0.5, "eval/epoch": 3, "eval/test/delta_m": 1.5,
        "eval/test/latency/direct/ms_per_image_batch1": 2.0, "eval/last_2/val/miou": 0.4}


def test_wandb_failing_never_fails_the_evaluation(tracked_run, monkeypatch, caplog) -> None:
    import wandb

    def broken(*args, **kwargs):
        raise ConnectionError("service gone")

    monkeypatch.setattr(wandb, "init", broken)
    with caplog.at_level(logging.WARNING):
        result = evaluate_run(tracked_run, options=EvalOptions(**OPTIONS))
    assert "wandb" not in result and (tracked_run / "eval" / "metrics.json").is_file()
    assert "W&B logging of the evaluation failed (ConnectionError" in caplog.text


def test_wandb_none_logs_nothing_and_a_bad_option_is_refused(tracked_run) -> None:
    before = _eval_runs(tracked_run)
    result = evaluate_run(tracked_run, options=EvalOptions(**OPTIONS, wandb="none"))
    assert "wandb" not in result and _eval_runs(tracked_run) == before
    with pytest.raises(EvaluationError, match="wandb=.wandb.: use auto"):
        evaluate_run(tracked_run, options=EvalOptions(**OPTIONS, wandb="wandb"))
    with pytest.raises(EvaluationError, match="wandb_mode='ofline'"):
        evaluate_run(tracked_run, options=EvalOptions(**OPTIONS, wandb_mode="ofline"))
    result = evaluate_run(tracked_run, options=EvalOptions(**OPTIONS, wandb_mode="dryrun"))
    assert result["wandb"]["mode"] == "offline"  # W&B's older name, as resolve_mode reads it


def test_results_are_on_disk_before_wandb_logging_starts(tracked_run, monkeypatch) -> None:
    """A job killed while W&B waits (init, uploads) still leaves its results."""
    from xtask_mt.engine import evaluate_run as module

    (tracked_run / "eval" / "metrics_val.json").unlink(missing_ok=True)
    seen = []

    def slow_wandb(result, cfg, train_run_id, job_dir, out_dir, mode):
        seen.append(json.loads((out_dir / "metrics_val.json").read_text()))
        return {"run_id": "eval1", "train_run_id": train_run_id, "mode": "offline"}

    monkeypatch.setattr(module, "log_evaluation", slow_wandb)
    evaluate_run(tracked_run, options=EvalOptions(**OPTIONS))
    assert "metrics" in seen[0] and "wandb" not in seen[0]
    written = json.loads((tracked_run / "eval" / "metrics.json").read_text())
    assert written["wandb"]["run_id"] == "eval1"


def test_finish_timeout_of_an_older_config_is_the_documented_default() -> None:
    from xtask_mt.tracking.wandb_run import wandb_settings

    assert wandb_settings(OmegaConf.create({})).finish_timeout == 300
