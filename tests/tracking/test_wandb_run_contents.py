"""What an offline W&B run holds after training, read back from its files: the summary
(final, best-epoch and best-over-run values), per-class IoU tables, the job's Hydra files,
the checkpoint artifact, and steps that carry on across a SIGTERM and resume."""

from __future__ import annotations

import json
import math
import os
import signal
from collections.abc import Iterator

import pytest
import torch
from helpers.config import compose_config
from helpers.sweep_settings import tiny_overrides
from helpers.wandb_files import offline_runs
from omegaconf import OmegaConf

from xtask_mt.data.synthetic import CLASS_NAMES
from xtask_mt.engine import trainer as training
from xtask_mt.tracking.wandb_run import CLASS_IOU_KEY, summary_values


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # artifact staging
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def wandb_cfg(**changes: object):
    return compose_config(tiny_overrides(**{"logger": "wandb", "logger.samples": 0, **changes}))


def test_summary_keeps_final_best_epoch_and_best_over_run_values() -> None:
    history = [{"epoch": 1, "val/miou": 0.2, "val/abs_err": 0.5, "train/total": 3.0},
               {"epoch": 2, "val/miou": 0.4, "val/abs_err": 0.7},
               {"epoch": 3, "val/miou": 0.3, "val/abs_err": float("nan")}]
    values = summary_values(history, {"val/miou": 0.4, "val/abs_err": 0.7}, best_epoch=2)
    assert values == {"best/val/miou": 0.4, "best/val/abs_err": 0.7, "best/epoch": 2,
                      "max/val/miou": 0.4, "min/val/abs_err": 0.5}


def test_trained_run_holds_summaries_tables_hydra_files_and_checkpoints(tmp_path) -> None:
    cfg = wandb_cfg(trainer__epochs=2, logger__mode="online", logger__log_checkpoints="true")
    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    training.train(cfg, job)

    (run,) = offline_runs(job)
    written = json.loads((job / "metrics.json").read_text())
    assert run.config["logger"]["mode"] == "offline"  # WANDB_MODE won over logger.mode
    for key, value in written["final"].items():
        assert run.summary[key] == pytest.approx(value), key
    for key, value in written["best"].items():
        assert run.summary[f"best/{key}"] == pytest.approx(value), key
    assert run.summary["best/epoch"] == written["best_epoch"]
    rows = [r for r in run.history if "val/miou" in r]
    assert run.summary["max/val/miou"] == pytest.approx(max(r["val/miou"] for r in rows))
    assert run.summary["min/val/abs_err"] == pytest.approx(min(r["val/abs_err"] for r in rows))

    tables = [r for r in run.history if f"{CLASS_IOU_KEY}/path" in r]
    assert [r["_step"] for r in tables] == [1, 2]
    for row in tables:
        table = run.table(row, CLASS_IOU_KEY)
        assert [t["class"] for t in table] == list(CLASS_NAMES)
        assert {t["epoch"] for t in table} == {row["_step"]}
        seen = [t["iou"] for t in table if t["iou"] is not None]
        assert sum(seen) / len(seen) == pytest.approx(row["val/miou"])

    assert {".hydra/config.yaml"} <= set(run.files)
    assert (run.dir / "files" / ".hydra" / "config.yaml").is_file()
    (artifact,) = [a for a in run.artifacts if a["type"] == "model"]
    assert artifact["name"] == f"model-{run.run_id}"
    assert sorted(artifact["paths"]) == ["best.pt", "last.pt"]
    assert artifact["metadata"] == {"best_epoch": written["best_epoch"]}


def test_steps_carry_on_across_a_sigterm_and_resume(tmp_path, monkeypatch) -> None:
    """SIGTERM in epoch 2 of 3, then the same job again: one W&B run whose `_step` (the
    epoch) rises across both offline records instead of starting again at 0."""
    from xtask_mt.losses import TaskObjective
    from xtask_mt.runtime.preemption import TrainingInterrupted

    original, steps = TaskObjective.__call__, []

    def signalling(self, out, batch):
        if out["seg"].requires_grad:
            steps.append(1)
            if len(steps) == 3:  # 2 steps per epoch: the first step of epoch 2
                os.kill(os.getpid(), signal.SIGTERM)
        return original(self, out, batch)

    cfg = wandb_cfg(trainer__epochs=3, dataset__train_size=8, logger__samples=1)
    with monkeypatch.context() as patched, pytest.raises(TrainingInterrupted):
        patched.setattr(TaskObjective, "__call__", signalling)
        training.train(cfg, tmp_path / "job")
    training.train(cfg, tmp_path / "job")

    first, second = offline_runs(tmp_path / "job")
    assert second.run_id == first.run_id and first.exit_code != 0
    steps_logged = [r["_step"] for run in (first, second) for r in run.history]
    assert steps_logged == [1, 2, 3]
    for run in (first, second):  # images, table and scalars of an epoch share its step
        for row in run.history:
            assert row["epoch"] == row["_step"] and "samples/seg_0/path" in row
            assert f"{CLASS_IOU_KEY}/path" in row and "val/miou" in row
    assert not math.isnan(second.summary["best/val/miou"])
    rows = [r for run in (first, second) for r in run.history]
    for key, pick in (("val/miou", max), ("val/abs_err", min)):  # over both halves of the run
        summary_key = f"{'max' if pick is max else 'min'}/{key}"
        assert second.summary[summary_key] == pytest.approx(pick(r[key] for r in rows))
    written = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert second.summary["best/epoch"] == written["best_epoch"]
    assert [h["epoch"] for h in written["history"]] == steps_logged
