"""The debug group (debug=fdr|limit|overfit|profile) and the batch limits behind it:
each runs a shrunk job and does what README, "Debug runs", says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.config import ROOT, TINY, compose_config

from xtask_mt.engine import loops
from xtask_mt.engine.batch_limits import limited_batches
from xtask_mt.engine.trainer import train


@pytest.fixture
def batches(monkeypatch) -> dict[str, list]:
    """The images' sums of the batches each training step and each evaluation pass saw."""
    seen: dict[str, list] = {"train": [], "eval": []}
    train_step, to_device = loops.train_step, loops.to_device

    def counted_step(parts, batch, *args, **kwargs):
        seen["train"].append(float(batch["image"].sum()))
        seen["eval"].pop()  # to_device below counted it as an evaluation batch
        return train_step(parts, batch, *args, **kwargs)

    def counted_move(batch, device):
        seen["eval"].append(float(batch["image"].sum()))
        return to_device(batch, device)

    monkeypatch.setattr(loops, "train_step", counted_step)
    monkeypatch.setattr(loops, "to_device", counted_move)
    return seen


@pytest.mark.parametrize("option,settings", [
    ("fdr", {"epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1,
             "keep_checkpoints": "none"}),
    ("limit", {"epochs": 3, "limit_train_batches": 0.05, "limit_val_batches": 0.1}),
    ("overfit", {"epochs": 20, "overfit_batches": 2}),
    ("profile", {"epochs": 1, "limit_train_batches": 5, "limit_val_batches": 1,
                 "profile": True}),
])
def test_debug_options_hold_what_readme_says(option, settings):
    cfg = compose_config([f"debug={option}"])
    assert {key: cfg.trainer[key] for key in settings} == settings
    assert cfg.logger.name == "none" and cfg.dataset.num_workers == 0
    assert cfg.trainer.progress_bar and cfg.trainer.resume is False
    assert cfg.trainer.skip_finished is False


def test_limits_are_counts_or_fractions():
    assert limited_batches(1.0, 10) == 10
    assert limited_batches(0.25, 10) == 2
    assert limited_batches(0.01, 10) == 1  # a fraction keeps at least one batch
    assert limited_batches(3, 10) == 3
    assert limited_batches(30, 10) == 10


def test_limit_trains_and_validates_on_some_batches(tmp_path, batches):
    # 16 train samples in batches of 4 = 4 batches (2 kept), 8 val samples = 2 batches (1 kept)
    cfg = compose_config(TINY + ["debug=limit", "trainer.epochs=2", "dataset.train_size=16",
                                 "dataset.val_size=8", "trainer.limit_train_batches=2",
                                 "trainer.limit_val_batches=0.5", "trainer.progress_bar=false"])
    summary = train(cfg, tmp_path)
    assert summary["epochs_run"] == [1, 2]
    assert len(batches["train"]) == 2 * 2 and len(batches["eval"]) == 2 * 1
    assert batches["train"][:2] != batches["train"][2:]  # still shuffled every epoch


def test_fdr_runs_one_batch_each_into_a_debug_dir_and_keeps_no_checkpoint(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "debug=fdr", *TINY, f"paths.log_dir={tmp_path}",
         "tags=[smoke]"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "debug").glob("*/*")  # <log_dir>/debug/<date>/<time>
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["epochs_run"] == [1] and summary["tags"] == ["smoke"]
    assert json.loads((run_dir / "job.json").read_text())["tags"] == ["smoke"]
    assert not (run_dir / "checkpoints").exists()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    saved = (run_dir / "config_tree.txt").read_text()
    assert "├── trainer" in saved and "limit_train_batches: 1" in saved
    assert "composed config" in result.stdout + result.stderr


def test_overfit_trains_on_the_same_batches_and_the_loss_falls(tmp_path, batches):
    cfg = compose_config(TINY + ["debug=overfit", "trainer.epochs=4", "trainer.overfit_batches=1",
                                 "optimizer.lr=0.001", "trainer.progress_bar=false"])
    summary = train(cfg, tmp_path)
    assert len(set(batches["train"])) == 1  # the same first batch, every epoch
    assert batches["eval"] == batches["train"]  # validated on that same batch
    losses = [h["train/total"] for h in summary["history"]]
    assert losses[-1] < 0.6 * losses[0]
    val = [h["val/loss_seg"] for h in summary["history"]]
    assert val[-1] < val[0]


def test_profile_writes_the_key_averages_table_and_a_trace(tmp_path, caplog):
    cfg = compose_config(TINY + ["debug=profile", "trainer.limit_train_batches=1",
                                 "trainer.progress_bar=false"])
    with caplog.at_level("INFO", logger="xtask_mt"):
        train(cfg, tmp_path)
    table = (tmp_path / "profile" / "key_averages.txt").read_text()
    assert "Self CPU time total" in table and "aten::" in table
    assert json.loads((tmp_path / "profile" / "trace.json").read_text())["traceEvents"]
    assert table.splitlines()[3] in caplog.text  # the table was printed too
    assert not Path(tmp_path / "checkpoints").exists()
