"""Every documented config option composes and builds."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers.config import ROOT, TINY, compose_config

from xtask_mt.config.build import (
    build_dataset,
    build_model,
    build_objective,
    build_optimizer,
    build_scheduler,
    build_weighting,
)

OPTIONS = [
    "encoder=resnet18", "encoder=resnet34", "encoder=resnet50", "encoder=resnet101",
    "encoder=resnet152", "model.transfer.batch_norm=true", "model.transfer.wider=true",
    "loss.alpha=0.5", "loss.gamma=0.2", "loss.label_smoothing=0.1",
    "loss/depth=l1", "loss/depth=mse", "loss/depth=logl1", "loss/depth=smoothl1",
    "loss/tdepth=l1", "loss/tdepth=ssim", "loss/tseg=cross", "loss/tseg=kl",
    "weighting=fixed", "weighting=uncertainty", "weighting=gradnorm",
    "optimizer=adam", "optimizer=sgd", "optimizer.lr=0.001",
    "scheduler.step_size=3", "scheduler.gamma=0.1", "dataset.batch_size=2",
    "dataset.height=64", "dataset.width=96", "dataset.num_workers=0",
    "trainer.epochs=2", "trainer.device=cpu", "trainer.device=auto", "trainer.seed=3",
]


@pytest.mark.parametrize("option", OPTIONS)
def test_option_composes_and_builds(option):
    cfg = compose_config([option])
    key, _, value = option.partition("=")
    node = cfg
    path = key.replace("/", ".").split(".")
    for part in path:
        node = node[part]
    if "/" in key or key in ("encoder", "weighting", "optimizer"):
        assert node["name"] == value
    else:
        assert str(node).lower() == value.lower() or float(node) == float(value)
    dataset = build_dataset(cfg, "train")
    model = build_model(cfg, dataset.num_classes)
    weighting = build_weighting(cfg, model.tasks)
    optimizer = build_optimizer(cfg, model, weighting)
    build_scheduler(cfg, optimizer)
    objective = build_objective(cfg)
    assert [(t.edge, t.weight) for t in objective.consistency] == [
        ("seg_to_depth", cfg.loss.alpha), ("depth_to_seg", cfg.loss.gamma)]
    if option == "model.transfer.wider=true":
        assert model.seg_to_depth.down[0][0].out_channels == 128
    if option.startswith("encoder=resnet"):
        assert sum(isinstance(m, torch.nn.Conv2d) for m in model.encoder.modules()) > 10


def test_weighting_parameters_are_optimised_at_their_own_rate():
    cfg = compose_config(["weighting=gradnorm", "weighting.lr=0.5", "encoder=resnet18"])
    model = build_model(cfg, 7)
    weighting = build_weighting(cfg, model.tasks)
    optimizer = build_optimizer(cfg, model, weighting)
    assert optimizer.param_groups[1]["lr"] == 0.5
    assert optimizer.param_groups[1]["params"][0] is weighting.weights


def test_tiny_overrides_compose():
    cfg = compose_config(TINY)
    assert cfg.dataset.height == 32 and cfg.encoder.depth == 18


def test_help_lists_groups_and_options():
    result = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    conf = ROOT / "conf"
    groups = {str(d.relative_to(conf)): sorted(f.stem for f in d.glob("*.yaml"))
              for d in conf.rglob("*") if d.is_dir() and any(d.glob("*.yaml"))
              and not str(d.relative_to(conf)).startswith("hydra")}
    for required in ("dataset", "encoder", "loss/depth", "loss/tdepth", "loss/tseg",
                     "weighting", "optimizer", "model", "logger"):
        assert required in groups
    for group, options in groups.items():
        assert f"{group}: {', '.join(options)}" in result.stdout, group
