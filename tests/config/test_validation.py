"""Every refused config value names the key, the value and what is accepted."""

from __future__ import annotations

import subprocess
import sys

import pytest
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
]


@pytest.mark.parametrize("override,key,accepted", REFUSED)
def test_bad_value_is_refused_with_key_value_and_range(override, key, accepted):
    cfg = compose_config([override])
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert key in message and accepted in message
    assert override.split("=", 1)[1].strip("[]").split(",")[0].lower() in message.lower()


def test_gradnorm_asymmetry_and_cityscapes_classes():
    with pytest.raises(ConfigError, match="keys weighting.*asymmetry must be a number >= 0"):
        validate_config(compose_config(["weighting=gradnorm", "weighting.asymmetry=-1"]))
    with pytest.raises(ConfigError, match="7 or 19 for dataset=cityscapes"):
        validate_config(compose_config(["dataset=cityscapes", "dataset.num_classes=13"]))


def test_defaults_and_documented_choices_are_accepted():
    validate_config(compose_config([]))
    validate_config(compose_config(["dataset=cityscapes", "dataset.num_classes=19",
                                    "trainer.device=cuda:1", "trainer.resume=false"]))


def test_cli_prints_one_line_and_exits_non_zero(tmp_path):
    result = subprocess.run([sys.executable, "train.py", "loss.alpha=3",
                             f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: invalid config value loss.alpha=3: expected a "
                                     "number in [0, 1]")
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "checkpoints").exists()  # refused before any work
