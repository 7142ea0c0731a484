"""The task registry: a task added from a user module alone gets a head, losses, transfer
edges, metrics, augmentation rules and drawing, and trains; directions come from it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from helpers.config import TINY, compose_config
from torch.utils.data import default_collate

from xtask_mt.config.build import (
    build_dataset,
    build_metrics,
    build_model,
    build_objective,
    build_optimizer,
    build_weighting,
)
from xtask_mt.config.validate import validate_config
from xtask_mt.data.synthetic import SyntheticScenes
from xtask_mt.engine.loops import evaluate
from xtask_mt.engine.step import TrainingParts, train_step
from xtask_mt.errors import ConfigError
from xtask_mt.metrics import NamedSums
from xtask_mt.runtime.precision import StepOptions
from xtask_mt.tasks import (
    Task,
    get_task,
    higher_is_better,
    register_task,
    unregister_task,
)


class ShadeMetrics:
    """Mean squared error of the 2-channel prediction, and of each incoming edge."""

    def __init__(self, device: torch.device | str, edges: Sequence[str]) -> None:
        self.edges = tuple(edges)
        self.sums = NamedSums(["squared", "values", *(f"edge_{e}" for e in self.edges)],
                              device)

    def update(self, pred, batch, transferred) -> None:
        self.sums.add("squared", ((pred.float() - batch["shade"]) ** 2).sum())
        self.sums.add("values", pred.numel())
        for edge, other in transferred.items():
            self.sums.add(f"edge_{edge}", (other.float() - pred.float()).abs().sum())

    def state_tensors(self) -> list[torch.Tensor]:
        return [self.sums.values]

    def compute(self) -> dict[str, float]:
        n = self.sums["values"]
        return {"shade_mse": float(self.sums["squared"] / n),
                **{f"consistency_{e}": float(self.sums[f"edge_{e}"] / n) for e in self.edges}}


class Shade(Task):
    """A toy dense regression with 2 channels: the image's mean brightness and its
    horizontal position (whose sign a flip reverses)."""

    name = "shade"
    sample_keys = ("shade",)
    direct_losses = ("mse",)
    consistency_losses = ("l1",)
    headline_metrics = ("shade_mse",)

    def out_channels(self, num_classes: int) -> int:
        return 2

    def direct_loss(self, name: str):
        return lambda pred, batch: ((pred.float() - batch["shade"]) ** 2).mean()

    def consistency_loss(self, name: str, **options: Any):
        return lambda transferred, target, batch: (transferred.float() - target).abs().mean()

    def metrics(self, num_classes: int, device, edges: Sequence[str]) -> ShadeMetrics:
        return ShadeMetrics(device, edges)

    @property
    def metric_directions(self) -> Mapping[str, bool]:
        return {"shade_mse": False, "consistency": False}

    def disagreement(self, transferred: torch.Tensor, direct: torch.Tensor) -> torch.Tensor:
        return (transferred.float() - direct.float()).abs().sum(dim=1)

    def image_errors(self, pred: torch.Tensor, batch) -> torch.Tensor:
        return ((pred.float() - batch["shade"]) ** 2).mean(dim=(1, 2, 3))

    def prediction_map(self, pred: torch.Tensor) -> np.ndarray:
        return pred[:, 0].float().cpu().numpy()

    def truth_map(self, batch):
        truth = batch["shade"][:, 0].cpu().numpy()
        return truth, np.ones_like(truth, dtype=bool)


@pytest.fixture
def shade_task():
    task = register_task(Shade())
    yield task
    unregister_task("shade")


def _batch(cfg) -> dict[str, torch.Tensor]:
    batch = default_collate([build_dataset(cfg, "train")[i] for i in range(4)])
    image = batch["image"]
    column = torch.linspace(-1, 1, image.shape[-1]).expand_as(image[:, 0])
    batch["shade"] = torch.stack([image.mean(1), column], dim=1)
    return batch


THREE_TASKS = TINY + ["model.tasks=[seg,depth,shade]",
                      "model.transfer.edges=[[seg,depth],[depth,seg],[depth,shade]]",
                      "+loss.consistency.depth_to_shade=0.25"]


def test_a_third_task_from_the_registry_alone_trains_a_step_and_is_measured(shade_task,
                                                                           monkeypatch):
    # a dataset must give the task's ground truth: here _batch adds it to synthetic samples
    monkeypatch.setattr(SyntheticScenes, "provides", (*SyntheticScenes.provides, "shade"))
    cfg = compose_config(THREE_TASKS)
    validate_config(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, 7)
    assert model.tasks == ("seg", "depth", "shade")
    assert [e.name for e in model.edges] == ["seg_to_depth", "depth_to_seg", "depth_to_shade"]
    weighting = build_weighting(cfg, model.tasks)
    parts = TrainingParts(model, model, build_objective(cfg), weighting,
                          build_optimizer(cfg, model, weighting), StepOptions(torch.device("cpu")))
    batch = _batch(cfg)
    model.train()
    before = model.decoders["shade"].head.weight.detach().clone()
    result = train_step(parts, batch, step=0)
    assert result.applied and torch.isfinite(result.total)
    assert set(result.losses.tasks) == {"seg", "depth", "shade"}
    assert set(result.losses.terms) == {"seg", "depth", "shade", "seg_to_depth",
                                        "depth_to_seg", "depth_to_shade"}
    # the depth task loss now also holds the depth->shade consistency term
    t = result.losses.terms
    expected = (1 - 0.01 - 0.25) * t["depth"] + 0.01 * t["depth_to_seg"] \
        + 0.25 * t["depth_to_shade"]
    torch.testing.assert_close(result.losses.tasks["depth"], expected)
    assert not torch.equal(model.decoders["shade"].head.weight, before)
    assert model.depth_to_shade.head.weight.grad is not None

    figures = evaluate(model, [batch], parts.objective, build_metrics(cfg, 7, "cpu"),
                       parts.options, progress_bar=False)
    mse = ((model.eval()(batch["image"])["shade"] - batch["shade"]) ** 2).mean().item()
    assert figures["shade_mse"] == pytest.approx(mse, rel=1e-5)
    assert {"miou", "abs_err", "consistency_depth_to_shade", "loss_depth_to_shade"} <= set(
        figures)


def test_metric_directions_come_from_the_tasks(shade_task):
    assert higher_is_better("val/miou") and higher_is_better("best/delta2")
    assert not higher_is_better("val/abs_err") and not higher_is_better("val/loss_seg")
    assert higher_is_better("val/consistency_depth_to_seg")      # agreement
    assert not higher_is_better("val/consistency_seg_to_depth")  # an error
    assert not higher_is_better("val/shade_mse")
    assert not higher_is_better("val/consistency_depth_to_shade")


def test_unknown_tasks_and_bad_edges_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="unknown task 'shade'.*known tasks: depth, normal, seg"):
        get_task("shade")
    with pytest.raises(ConfigError, match="model.tasks"):
        validate_config(compose_config(["model.tasks=[seg,shade]"]))
    with pytest.raises(ConfigError, match="model.transfer.edges"):
        validate_config(compose_config(["model.transfer.edges=[[seg,seg]]"]))
    with pytest.raises(ConfigError, match="loss.consistency.seg_to_depth=None"):
        validate_config(compose_config(["~loss.consistency.seg_to_depth"]))


def test_the_edges_out_of_one_task_may_not_outweigh_its_direct_loss(shade_task, monkeypatch):
    monkeypatch.setattr(SyntheticScenes, "provides", (*SyntheticScenes.provides, "shade"))
    cfg = compose_config(THREE_TASKS[:-1] + ["+loss.consistency.depth_to_shade=0.6",
                                             "loss.gamma=0.6"])
    with pytest.raises(ConfigError, match="edges out of depth sum to 1.2"):
        validate_config(cfg)
