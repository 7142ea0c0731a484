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

from xtask_mt.tracking.job_context import (
    context_tags,
    job_context,
    short_name,
    single_run_name,
    swept_keys,
)


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


def test_integers_are_never_cut_and_cut_floats_get_the_job_number() -> None:
    assert short_name(["trainer.seed=123456789"], ["trainer.seed"], 0) == "seed=123456789"
    assert short_name(["trainer.seed=123456790"], ["trainer.seed"], 1) == "seed=123456790"
    assert short_name(["loss.alpha=0.000123456789"], ["loss.alpha"], 4) == "alpha=0.0001235#4"
    assert short_name(["loss.alpha=0.1000000000"], ["loss.alpha"], 4) == "alpha=0.1"  # same
    assert short_name(["loss.alpha=0.1"], ["loss.alpha"], 4, numbered=True) == "alpha=0.1#4"


def test_a_single_run_is_named_by_its_experiment_and_overrides() -> None:
    overrides = ["experiment=paper", "logger=wandb", "logger.mode=offline", "tags=[a]",
                 "loss.alpha=0.01", "loss/tdepth=ssim", "~trainer.foo"]
    assert single_run_name("paper", overrides) == "paper alpha=0.01,tdepth=ssim"
    assert single_run_name("paper", ["logger=wandb"]) == "paper"
    assert single_run_name(None, ["loss.gamma=0.1"]) == "gamma=0.1"
    assert single_run_name(None, ["logger=wandb"]) is None  # caller: the output dir


def test_optuna_trials_are_numbered_and_named_by_the_sweeper_params(tmp_path) -> None:
    """Inside an Optuna trial: hydra.sweeper.params name it (Optuna writes no multirun.yaml),
    and the trial number keeps two trials with the same rounded values apart."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "hparams_search=optuna", "loss.alpha=0.0123456789", "loss.gamma=0.05",
            "trainer.seed=123456789", f"hydra.sweep.dir={tmp_path}", "hydra.job.num=7"],
            return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        context = job_context()
    finally:
        HydraConfig.instance().cfg = None
    assert context.name == "alpha=0.01235,gamma=0.05#7"  # the seed is not a searched key
    assert context.group == str(tmp_path)


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
