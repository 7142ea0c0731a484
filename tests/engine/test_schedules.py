"""scheduler=step|cosine|poly with a linear warm-up: the learning rate of every epoch is the
documented formula, plain step stays StepLR (old checkpoints resume), bad settings are refused."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.config import TINY, compose_config

from xtask_mt.config.build import build_scheduler
from xtask_mt.config.validate import validate_config
from xtask_mt.engine.trainer import train
from xtask_mt.errors import ConfigError

LR = 1e-3
SHRUNK = TINY + ["dataset.train_size=4", f"optimizer.lr={LR}"]


def _lrs(overrides: list[str], epochs: int) -> list[float]:
    """The lr of epochs 1..epochs as the built scheduler sets it, stepped once per epoch."""
    cfg = compose_config(SHRUNK + [f"trainer.epochs={epochs}", *overrides])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = build_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_step_without_warmup_is_the_steplr_of_old_runs():
    cfg = compose_config(SHRUNK + ["scheduler.step_size=2", "scheduler.gamma=0.1"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    assert isinstance(build_scheduler(cfg, optimizer), torch.optim.lr_scheduler.StepLR)
    # a checkpoint written before the other schedules holds a StepLR state; it resumes
    old_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    old = torch.optim.lr_scheduler.StepLR(old_optimizer, step_size=2, gamma=0.1)
    for _ in range(3):
        old_optimizer.step()
        old.step()
    optimizer.load_state_dict(old_optimizer.state_dict())
    resumed = build_scheduler(cfg, optimizer)
    resumed.load_state_dict(old.state_dict())
    for _ in range(3):
        optimizer.step(), old_optimizer.step()
        resumed.step(), old.step()
        assert optimizer.param_groups[0]["lr"] == old_optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("overrides,expected", [
    (["scheduler.step_size=2", "scheduler.gamma=0.1"], [1, 1, 0.1, 0.1, 0.01, 0.01]),
    (["scheduler.step_size=2", "scheduler.gamma=0.5", "scheduler.warmup_epochs=2"],
     [1 / 3, 2 / 3, 1, 1, 0.5, 0.5]),
    (["scheduler=cosine"], [(1 + math.cos(math.pi * u / 6)) / 2 for u in range(6)]),
    (["scheduler=cosine", "scheduler.min_lr_ratio=0.2", "scheduler.warmup_epochs=2"],
     [1 / 3, 2 / 3] + [0.2 + 0.8 * (1 + math.cos(math.pi * u / 4)) / 2 for u in range(4)]),
    (["scheduler=poly", "scheduler.power=0.9"], [(1 - u / 6) ** 0.9 for u in range(6)]),
    (["scheduler=poly", "scheduler.power=2", "scheduler.warmup_epochs=1"],
     [0.5] + [(1 - u / 5) ** 2 for u in range(5)]),
])
def test_lr_of_every_epoch_follows_the_formula(overrides, expected):
    assert _lrs(overrides, 6) == pytest.approx([LR * f for f in expected], rel=1e-9)


@pytest.mark.parametrize("name", ["step", "cosine", "poly"])
def test_shrunk_job_trains_with_each_schedule_and_resumes_it(tmp_path, name):
    overrides = [f"scheduler={name}", "scheduler.warmup_epochs=1"]
    summary = train(compose_config(SHRUNK + overrides + ["trainer.epochs=2"]), tmp_path)
    resumed = train(compose_config(SHRUNK + overrides + ["trainer.epochs=3"]), tmp_path)
    logged = [h["train/lr"] for h in summary["history"] + resumed["history"][2:]]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    # the resumed run rebuilds the schedule over 3 epochs: its third epoch is u=1 of N=2
    third = {"step": 1.0, "cosine": 0.5, "poly": 0.5 ** 0.9}[name]
    assert logged == pytest.approx([LR / 2, LR, LR * third], rel=1e-9)


@pytest.mark.parametrize("override,key,accepted", [
    ("scheduler.warmup_epochs=5", "scheduler.warmup_epochs", "below trainer.epochs=5"),
    ("scheduler.warmup_epochs=-1", "scheduler.warmup_epochs", "an integer >= 0"),
    ("scheduler=poly scheduler.power=0", "scheduler.power", "a positive number"),
    ("scheduler=cosine scheduler.min_lr_ratio=1", "scheduler.min_lr_ratio", "[0, 1)"),
    ("scheduler.name=linear", "scheduler.name", "step, cosine, poly"),
])
def test_bad_schedule_settings_are_refused(override, key, accepted):
    with pytest.raises(ConfigError) as info:
        validate_config(compose_config(["trainer.epochs=5", *override.split()]))
    assert key in str(info.value) and accepted in str(info.value)
