"""Every refused config value names the key, the value and what is accepted."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers.config import ROOT, compose_config

from xtask_mt.config.validate import validate_config
from xtask_mt.errors import ConfigError

REFUSED = [
    ("loss.alpha=-0.1", "loss.alpha", "[0, 1]"),
    ("loss.alpha=1.5", "loss.alpha", "[0, 1]"),
    ("loss.gamma=2", "loss.gamma", "[0, 1]"),
    ("loss.label_smoothing=1.0", "loss.label_smoothing", "[0, 1)"),
    ("loss.label_smoothing=-0.2", "loss.label_smoothing", "[0, 1)"),
    ("encoder.depth=42", "encoder.depth", "[18, 34, 50, 101, 152]"),
    ("dataset.num_classes=19", "dataset.num_classes", "7 for dataset=synthetic"),
    ("dataset.height=100", "dataset.height", "divisible by 32"),
    ("dataset.width=0", "dataset.width", "divisible by 32"),
    ("dataset.batch_size=0", "dataset.batch_size", ">= 1"),
    ("dataset.num_workers=-1", "dataset.num_workers", ">= 0"),
    ("dataset.train_size=0", "dataset.train_size", ">= 1"),
    ("optimizer.lr=0", "optimizer.lr", "positive"),
    ("optimizer.lr=abc", "optimizer.lr", "positive"),
    ("optimizer.betas=[0.9,1.5]", "optimizer.betas", "[0, 1)"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay", ">= 0"),
    ("scheduler.step_size=0", "scheduler.step_size", ">= 1"),
    ("scheduler.gamma=0", "scheduler.gamma", "(0, 1]"),
    ("trainer.epochs=0", "trainer.epochs", ">= 1"),
    ("trainer.val_every=0", "trainer.val_every", ">= 1"),
    ("trainer.device=gpu", "trainer.device", "auto, cpu, cuda"),
    ("trainer.monitor_mode=up", "trainer.monitor_mode", "max or min"),
    ("trainer.seed=-3", "trainer.seed", ">= 0"),
    ("trainer.resume=true", "trainer.resume", "auto, false"),
    ("optimizer=sgd optimizer.momentum=-1", "optimizer.momentum", "[0, 1)"),
    ("model.decoder_width=0", "model.decoder_width", ">= 1"),
    ("logger=wandb logger.mode=bogus", "logger.mode", "online, offline, disabled"),
    ("logger=wandb logger.log_checkpoints=sometimes", "logger.log_checkpoints", "true or false"),
    ("logger=wandb logger.tags=mine", "logger.tags", "a list of non-empty strings"),
    ("logger=wandb logger.tags=[ok,'']", "logger.tags", "at most 64 characters"),
    (f"logger=wandb tags=[{'x' * 65}]", "logger.tags", "at most 64 characters"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches", "a batch count >= 1"),
    ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches", "(0.0, 1.0]"),
    ("trainer.overfit_batches=-1", "trainer.overfit_batches", "an integer >= 0"),
    ("trainer.early_stopping.patience=-1", "trainer.early_stopping.patience", "an integer >= 0"),
    ("trainer.early_stopping.min_delta=-0.1", "trainer.early_stopping.min_delta", "a number >= 0"),
    ("weighting.weights={seg:-1}", "weighting", "finite numbers >= 0"),
    ("weighting.weights={seg:nan}", "weighting", "finite numbers >= 0"),
    ("trainer.monitor=val/bogus", "trainer.monitor", "val/abs_err"),
    ("trainer.monitor=val/miuo", "trainer.monitor", "val/miou"),
]


@pytest.mark.parametrize("override,key,accepted", REFUSED)
def test_bad_value_is_refused_with_key_value_and_range(override, key, accepted):
    cfg = compose_config(override.split())
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert key in message and accepted in message
    value = override.split("=")[-1]
    if not value.startswith("{"):
        assert value.strip("[]").split(",")[0].lower() in message.lower()


def test_every_problem_is_reported_at_once():
    cfg = compose_config(["loss.alpha=3", "model.decoder_width=0", "trainer.monitor=val/x",
                          "weighting.weights={depth:-1}"])
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert "\n" not in message
    for key in ("loss.alpha=3", "model.decoder_width=0", "trainer.monitor='val/x'",
                "weighting"):
        assert key in message, key


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine "
                    "without a CUDA device")
def test_a_cuda_device_without_one_is_refused():
    with pytest.raises(ConfigError, match="trainer.device=cuda, but this machine has no CUDA "
                                          "device"):
        validate_config(compose_config(["trainer.device=cuda"]))


def test_an_unknown_wandb_mode_in_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(ConfigError, match="WANDB_MODE='bogus'"):
        validate_config(compose_config(["logger=wandb"]))
    validate_config(compose_config([]))  # without W&B it does not matter


def test_the_monitor_may_name_any_metric_a_validation_reports(tmp_path):
    """The names validation_metric_names predicts are exactly those a validation gives."""
    from helpers.config import TINY

    from xtask_mt.config.validate import validation_metric_names
    from xtask_mt.engine.trainer import train

    for extra in ([], ["model.transfer.enabled=false"]):
        cfg = compose_config(TINY + extra)
        summary = train(cfg, tmp_path / str(len(extra)))
        assert validation_metric_names(cfg) == set(summary["final"])


def test_gradnorm_asymmetry_and_cityscapes_classes():
    with pytest.raises(ConfigError, match="keys weighting.*asymmetry must be a number >= 0"):
        validate_config(compose_config(["weighting=gradnorm", "weighting.asymmetry=-1"]))
    with pytest.raises(ConfigError, match="7 or 19 for dataset=cityscapes"):
        validate_config(compose_config(["dataset=cityscapes", "dataset.num_classes=13"]))


def test_defaults_and_documented_choices_are_accepted():
    validate_config(compose_config([]))
    validate_config(compose_config(["dataset=cityscapes", "dataset.num_classes=19",
                                    "trainer.device=cpu", "trainer.resume=false"]))


def test_cli_prints_one_line_and_exits_non_zero(tmp_path):
    result = subprocess.run([sys.executable, "train.py", "loss.alpha=3",
                             f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: invalid config value loss.alpha=3: expected a "
                                     "number in [0, 1]")
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "checkpoints").exists()  # refused before any work
