"""Run names from the keys a sweep varies, tags from the chosen config groups, and a real
2 x 2 multirun read back from its offline W&B files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers.config import ROOT
from helpers.sweep_settings import tiny_overrides
from helpers.wandb_files import offline_runs

from xtask_mt.tracking.job_context import context_tags, short_name, swept_keys


def test_swept_keys_come_from_sweeper_params_and_command_line_sweeps() -> None:
    params = {"loss.alpha": "tag(log, interval(1e-5, 0.3))", "trainer.seed": "0"}
    command_line = ["loss.gamma=0,0.1", "logger.tags=[a,b]", "trainer.epochs=2",
                    "loss/tdepth=choice(l1,ssim)", "not an override"]
    assert swept_keys(params, command_line) == ["loss.alpha", "loss.gamma", "loss/tdepth"]


def test_short_name_keeps_varied_keys_last_component_and_short_floats() -> None:
    job = ["logger.entity=me", "loss.alpha=0.000123456789", "loss.gamma=0.1",
           "loss/tdepth=ssim", "trainer.epochs=2"]
    varied = ["loss.alpha", "loss.gamma", "loss/tdepth"]
    assert short_name(job, varied) == "alpha=0.0001235,gamma=0.1,tdepth=ssim"
    assert short_name(["loss.alpha=1", "kd.alpha=2"], ["loss.alpha", "kd.alpha"]) == \
        "loss.alpha=1,kd.alpha=2"  # the same last component: full keys
    assert short_name(["trainer.epochs=2"], ["loss.alpha"]) == ""  # caller: job number


def test_tags_name_the_preset_experiment_search_and_seed_table_row() -> None:
    choices = {"experiment": "nyuv2_paper", "hparams_search": None,
               "seed_table": "nyuv2/ours", "encoder": "resnet34"}
    assert context_tags(choices, "seed_table_nyuv2") == (
        "sweep:seed_table_nyuv2", "experiment:nyuv2_paper", "seed_table:nyuv2/ours")
    assert context_tags({"experiment": None}, "config") == ()


@pytest.mark.slow
def test_two_by_two_sweep_names_runs_by_the_varied_keys(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "train.py", "-m", *tiny_overrides(logger="wandb", **{
            "logger.samples": 0, "logger.tags": "[mine]", "logger.entity": "someone"}),
         "loss.alpha=0,0.1", "loss.gamma=0,0.1", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [offline_runs(sweep / str(i))[0] for i in range(4)]
    assert [r.name for r in runs] == ["alpha=0,gamma=0", "alpha=0,gamma=0.1",
                                      "alpha=0.1,gamma=0", "alpha=0.1,gamma=0.1"]
    for run in runs:
        assert run.tags == ["mine"]
        assert run.config["logger"]["mode"] == "offline"  # as used, not the default online
        assert "logger.entity=someone" in run.config["overrides"]
        assert f"loss.alpha={run.config['loss']['alpha']}" in run.config["overrides"]
        assert {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"} <= \
            set(run.files)
