"""Learning-rate schedules of the `scheduler` group, stepped once per epoch.

Every schedule but plain `step` is a LambdaLR over `lr_factor`, a closed-form function of the
epochs done, so the learning rate of any epoch can be read off the formula (and a resumed job
recomputes it from the config rather than from saved state). `step` without warm-up stays a
StepLR, so that runs and checkpoints from before the other schedules train and resume exactly
as they did.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from omegaconf import DictConfig

from xtask_mt.errors import ConfigError

SCHEDULES = ("step", "cosine", "poly")


def lr_factor(s: DictConfig, epochs: int, done: int) -> float:
    """The factor on the optimiser's learning rate for the epoch after `done` epochs.

    Warm-up: epoch k <= W (k = done + 1) trains at k / (W + 1). After it, the `name`
    schedule runs over the remaining N = epochs - W epochs, with u = done - W of them done:
    step: gamma ** (u // step_size); cosine: m + (1 - m) * (1 + cos(pi * u / N)) / 2 with
    m = min_lr_ratio; poly: (1 - u / N) ** power.
    """
    warmup = int(s.get("warmup_epochs", 0))
    if done < warmup:
        return (done + 1) / (warmup + 1)
    u, n = done - warmup, max(epochs - warmup, 1)
    if s.name == "step":
        return float(s.gamma) ** (u // int(s.step_size))
    if s.name == "cosine":
        m = float(s.min_lr_ratio)
        return m + (1 - m) * (1 + math.cos(math.pi * min(u, n) / n)) / 2
    if s.name == "poly":
        return (1 - min(u, n) / n) ** float(s.power)
    raise ValueError(f"unknown scheduler {s.name!r}; pick scheduler={'|'.join(SCHEDULES)}")


def build_lr_schedule(s: DictConfig, epochs: int, optimizer: torch.optim.Optimizer
                      ) -> torch.optim.lr_scheduler.LRScheduler:
    """The torch scheduler of config group `scheduler` for a run of `epochs` epochs."""
    if s.name == "step" and int(s.get("warmup_epochs", 0)) == 0:
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(s.step_size),
                                               gamma=float(s.gamma))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: lr_factor(s, epochs, done))


def restore_lr_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler,
                        state: dict[str, Any]) -> None:
    """Load a checkpoint's scheduler `state`, after the optimiser's. A formula schedule then
    sets the lr of the next epoch from the formula, so that a job resumed with more
    trainer.epochs follows the schedule stretched over them."""
    formula = isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    if formula != ("lr_lambdas" in state):
        kinds = ("a formula schedule (scheduler=cosine|poly, or a warm-up)",
                 "plain scheduler=step (no warm-up)")
        raise ConfigError(f"the checkpoint was trained with {kinds[formula]} but this config "
                          f"builds {kinds[not formula]}; resume with the checkpoint's "
                          "scheduler settings, or start afresh (trainer.resume=false)")
    scheduler.load_state_dict(state)
    if formula:
        for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs,
                                       scheduler.lr_lambdas, strict=True):
            group["lr"] = base * factor(scheduler.last_epoch)
