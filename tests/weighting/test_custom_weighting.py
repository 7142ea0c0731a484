"""A weighting method added the way a user adds one: a TaskWeighting subclass in their own
module, named by `weighting._target_`, with no edit to the project."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from helpers.config import TINY, compose_config
from omegaconf import DictConfig, open_dict
from torch.utils.data import default_collate

from xtask_mt.config.build import (
    build_dataset,
    build_model,
    build_objective,
    build_optimizer,
    build_weighting,
)
from xtask_mt.engine.step import TrainingParts, train_step
from xtask_mt.engine.trainer import train
from xtask_mt.runtime.precision import StepOptions
from xtask_mt.weighting import StepContext, TaskWeighting


class SeparateGradients(TaskWeighting):
    """One gradient per task at the shared encoder, then summed: the plain sum's update,
    computed the way gradient methods (PCGrad, MGDA, ...) need it."""

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.stack(losses).sum()

    def task_weights(self) -> dict[str, float]:
        return dict.fromkeys(self.tasks, 1.0)

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        shared = list(ctx.shared_parameters)
        per_task = [torch.autograd.grad(losses[t], shared, retain_graph=True, allow_unused=True)
                    for t in self.tasks]
        total = self.combine(losses)
        ctx.scale(total).backward()  # the heads' gradients; the shared ones are replaced
        for i, p in enumerate(shared):
            grads = [g[i] for g in per_task if g[i] is not None]
            p.grad = torch.stack(grads).sum(0) if grads else None
        return total


class RecordingWeighting(TaskWeighting):
    """Plain sum that records what the epoch hook hands it."""

    def __init__(self, tasks, scale: float = 1.0) -> None:
        super().__init__(tasks)
        self.scale = scale
        self.seen: list[dict[str, float]] = []

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.scale * self.stack(losses).sum()

    def task_weights(self) -> dict[str, float]:
        return dict.fromkeys(self.tasks, self.scale)

    def epoch_end(self, mean_losses: Mapping[str, float]) -> None:
        self.seen.append(dict(mean_losses))


def _with_weighting(cfg: DictConfig, cls: type, **settings: object) -> DictConfig:
    """`cfg` with the weighting group replaced by what a user's YAML file would hold."""
    with open_dict(cfg):
        cfg.weighting = {"_target_": f"{__name__}.{cls.__name__}", "name": cls.__name__,
                         **settings}
    return cfg


def _encoder_gradients(cfg, batch) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(cfg, 7)
    weighting = build_weighting(cfg, model.tasks)
    parts = TrainingParts(model, model, build_objective(cfg), weighting,
                          build_optimizer(cfg, model, weighting), StepOptions(torch.device("cpu")))
    model.train()
    train_step(parts, batch, step=0)
    return {n: p.grad.clone() for n, p in model.encoder.named_parameters()}


def test_a_gradient_method_from_a_user_module_trains_a_step():
    cfg = _with_weighting(compose_config(TINY), SeparateGradients)
    batch = default_collate([build_dataset(cfg, "train")[i] for i in range(4)])
    assert isinstance(build_weighting(cfg, ("seg", "depth")), SeparateGradients)
    separate = _encoder_gradients(cfg, batch)
    plain = _encoder_gradients(compose_config(TINY), batch)
    assert separate.keys() == plain.keys()
    for name, grad in plain.items():  # the same up to float rounding
        assert (separate[name] - grad).norm() <= 1e-5 * grad.norm() + 1e-9, name


def test_a_user_weighting_runs_a_whole_job_and_gets_each_epochs_mean_losses(tmp_path,
                                                                               monkeypatch):
    cfg = _with_weighting(compose_config(TINY + ["trainer.epochs=2"]), RecordingWeighting,
                          scale=0.5)
    built: list[RecordingWeighting] = []
    original = RecordingWeighting.__init__

    def keep(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(RecordingWeighting, "__init__", keep)
    summary = train(cfg, tmp_path)
    weighting = built[-1]  # validation builds one first, to check the config
    assert weighting.scale == 0.5
    assert len(weighting.seen) == 2
    for seen, epoch in zip(weighting.seen, summary["history"], strict=True):
        assert seen == {t: epoch[f"train/task_{t}"] for t in ("seg", "depth")}
    assert summary["history"][0]["train/weight_seg"] == 0.5


def test_a_weighting_that_cannot_be_built_is_one_clear_config_error():
    from xtask_mt.errors import ConfigError

    cfg = _with_weighting(compose_config(TINY), RecordingWeighting, weights=None)
    with pytest.raises(ConfigError, match="RecordingWeighting.*weights"):
        build_weighting(cfg, ("seg", "depth"))
    cfg = compose_config(TINY + ["weighting._target_=no_such_module.Method"])
    with pytest.raises(ConfigError, match="no_such_module"):
        build_weighting(cfg, ("seg", "depth"))


class FeatureProbe(RecordingWeighting):
    """Asks for the encoder's output features (as MGDA-UB does) and records their shapes."""

    needs_features = True

    def backward(self, losses: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        self.seen.append({"shapes": [tuple(f.shape) for f in ctx.features],
                          "grad": all(f.requires_grad for f in ctx.features)})
        return super().backward(losses, ctx)


def test_a_method_that_asks_for_the_encoder_features_gets_those_of_the_step():
    cfg = _with_weighting(compose_config(TINY), FeatureProbe)
    batch = default_collate([build_dataset(cfg, "train")[i] for i in range(4)])
    model = build_model(cfg, 7)
    weighting = build_weighting(cfg, model.tasks)
    parts = TrainingParts(model, model, build_objective(cfg), weighting,
                          build_optimizer(cfg, model, weighting), StepOptions(torch.device("cpu")))
    train_step(parts, batch, step=0)
    train_step(parts, batch, step=1)
    (first, second) = weighting.seen
    assert first == second  # this step's features only, not an accumulation
    assert first["grad"] and len(first["shapes"]) == 5
    assert first["shapes"][-1] == (4, 512, 1, 2)  # layer4 of resnet18 at 32x64
