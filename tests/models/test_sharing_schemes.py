"""The sharing schemes (cross-stitch, MMoE, CGC, PLE, DSelect-k, LTB): predictions of every
task and edge at input size, parameter counts by each scheme's formula, the parameters the
gradient methods treat as shared (as README's architecture table says), a training step
under every weighting, and the tree and stitch semantics. The backbones are TinyBackbone
(ResNetEncoder's interface at a few thousand parameters) except where a test says ResNet-18."""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import pytest
import torch
from helpers.backbones import TinyBackbone
from helpers.config import TINY, compose_config
from omegaconf import DictConfig

from xtask_mt.config import build
from xtask_mt.config.build import (
    build_dataset,
    build_model,
    build_objective,
    build_optimizer,
    build_weighting,
)
from xtask_mt.engine import trainer as training
from xtask_mt.engine.checkpoint import CheckpointError, check_model_spec, model_spec
from xtask_mt.engine.step import TrainingParts, train_step
from xtask_mt.errors import ConfigError
from xtask_mt.models.dselect_k import smooth_step
from xtask_mt.models.schemes import SHARING_SCHEMES
from xtask_mt.models.sharing import InputSizeError
from xtask_mt.runtime.precision import StepOptions

SCHEMES = sorted(SHARING_SCHEMES)
TASKS = {2: "[seg,depth]", 3: "[seg,depth,normal]"}
CHANNELS = {"seg": 7, "depth": 1, "normal": 3}
# what README's architecture table calls shared: parameter-name prefixes under the trunk
SHARED = {"cross_stitch": ("",), "ltb": ("",), "mmoe": ("experts.",), "dselect_k": ("experts.",),
          "cgc": ("shared.",), "ple": ("shared.", "shared_gates.")}
# the weightings that read more of the architecture than its shared parameters: the last
# shared layer (gradnorm), the trunk's output maps (mgda_ub), a second forward pass (famo)
ARCHITECTURE_HOOKS = ("gradnorm", "mgda_ub", "famo")


@pytest.fixture
def tiny_backbones(monkeypatch):
    """Every ResNet the config would build is a TinyBackbone."""
    monkeypatch.setattr(build, "ResNetEncoder", TinyBackbone)


@functools.cache
def _composed(*overrides: str) -> DictConfig:
    return compose_config([*TINY, "model.decoder_width=8", *overrides])


def _cfg(scheme: str, tasks: int = 2, *extra: str) -> DictConfig:
    """A fresh copy of the composed config (composing is the slow part of these tests)."""
    return copy.deepcopy(_composed(f"model={scheme}", f"model.tasks={TASKS[tasks]}", *extra))


def _with_weighting(cfg: DictConfig, name: str) -> DictConfig:
    cfg.weighting = _composed(f"weighting={name}").weighting
    return cfg


def _batch(size: int) -> dict[str, torch.Tensor]:
    samples = build_dataset(_composed(), "train", augment=False)
    return {k: torch.stack([samples[i][k] for i in range(size)]) for k in samples[0]}


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("tasks", [2, 3])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_task_and_edge_is_predicted_at_input_size(tiny_backbones, scheme, tasks):
    edges = "[[seg,depth],[depth,seg],[depth,normal]]" if tasks == 3 else "[[seg,depth]]"
    cfg = _cfg(scheme, tasks, "model.transfer.enabled=true", f"model.transfer.edges={edges}")
    model = build_model(cfg, 7)
    out = model(torch.randn(2, 3, 32, 64))
    expected = {t: CHANNELS[t] for t in cfg.model.tasks}
    expected |= {f"{s}_to_{t}": CHANNELS[t] for s, t in cfg.model.transfer.edges}
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        k: (2, c, 32, 64) for k, c in expected.items()}
    assert len(model.encoder(torch.randn(1, 3, 32, 64))) == 5 * tasks


@pytest.mark.slow
def test_resnet18_schemes_predict_at_input_size():
    """The real backbone: the schemes cut torchvision's ResNet at its stages."""
    for scheme in SCHEMES:
        model = build_model(_cfg(scheme), 7)
        with torch.no_grad():
            out = model.eval()(torch.randn(1, 3, 32, 64))
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            "seg": (1, 7, 32, 64), "depth": (1, 1, 32, 64)}, scheme


def _stage_inputs(height: int, width: int) -> list[int]:
    """Values per image entering each stage of a TinyBackbone, measured by running one."""
    maps = TinyBackbone()(torch.zeros(1, 3, height, width))
    return [3 * height * width] + [m[0].numel() for m in maps[:4]]


@pytest.mark.parametrize("tasks", [2, 3])
def test_parameter_counts_follow_each_schemes_formula(tiny_backbones, tasks):
    k, pixels = tasks, 3 * 32 * 64
    backbone = _numel(TinyBackbone())
    counts = {}
    for scheme in SCHEMES:
        model = build_model(_cfg(scheme, tasks), 7)
        counts[scheme] = _numel(model.encoder)
        assert _numel(model) == counts[scheme] + sum(_numel(d) for d in model.decoders.values())
    gate = lambda inputs, n: (inputs + 1) * n  # noqa: E731  (linear layer to n choices)
    e, s, t = 3, 1, 1  # mmoe's experts; cgc/ple's shared and per-task experts
    de, dk, bits = 4, 2, 2  # dselect_k's experts, k and log2(experts)
    sizes = _stage_inputs(32, 64)
    assert counts == {
        "cross_stitch": k * backbone + 5 * k * k,
        "ltb": k * backbone + 4 * k * k,
        "mmoe": e * backbone + k * gate(pixels, e),
        "cgc": (s + k * t) * backbone + k * gate(pixels, s + t),
        "ple": (s + k * t) * backbone + k * sum(gate(n, s + t) for n in sizes)
        + sum(gate(n, s + k * t) for n in sizes[:4]),
        "dselect_k": de * backbone + k * (gate(pixels, dk * bits) + gate(pixels, dk)),
    }


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_gradient_method_sees_the_parameters_readme_calls_shared(tiny_backbones, scheme):
    cfg = _with_weighting(_cfg(scheme), "pcgrad")
    model = build_model(cfg, 7)
    weighting = build_weighting(cfg, tuple(cfg.model.tasks))
    parts = TrainingParts(model, model, build_objective(cfg), weighting,
                          build_optimizer(cfg, model, weighting), StepOptions(torch.device("cpu")))
    expected = [p for name, p in model.encoder.named_parameters()
                if name.startswith(SHARED[scheme])]
    ctx = parts.context(0)
    assert {id(p) for p in ctx.shared_parameters} == {id(p) for p in expected}
    assert 0 < len(expected) <= len(list(model.encoder.parameters()))
    weighting.backward(parts.losses(_batch(1), []).tasks, ctx)
    assert ctx.task_jacobian.shape == (2, sum(p.numel() for p in expected))
    # the rest of the trunk (gates, task experts) still learns, from its own task's loss
    assert all(p.grad is not None for p in model.encoder.parameters())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_weightings_that_read_the_architecture_take_a_finite_step(tiny_backbones, scheme):
    batch = _batch(2)
    for name in ARCHITECTURE_HOOKS:
        cfg = _with_weighting(_cfg(scheme), name)
        torch.manual_seed(0)
        model = build_model(cfg, 7)
        weighting = build_weighting(cfg, tuple(cfg.model.tasks))
        parts = TrainingParts(model, model, build_objective(cfg), weighting,
                              build_optimizer(cfg, model, weighting),
                              StepOptions(torch.device("cpu")))
        before = [p.detach().clone() for p in model.encoder.shared_parameters()]
        result = train_step(parts, batch, 0)
        assert result.applied and math.isfinite(float(result.total.detach())), name
        assert any(not torch.equal(a, b) for a, b in zip(
            before, model.encoder.shared_parameters(), strict=True)), name


@pytest.mark.parametrize("scheme", SCHEMES)
def test_two_epochs_on_synthetic_data_lower_the_loss(tiny_backbones, scheme, tmp_path: Path):
    cfg = _cfg(scheme, 2, "trainer.epochs=2", "dataset.train_size=4", "dataset.val_size=2",
               "trainer.overfit_batches=1", "optimizer.lr=1e-3", "logger=none",
               "trainer.keep_checkpoints=none")
    summary = training.train(cfg, tmp_path)
    first, second = (e["train/total"] for e in summary["history"])
    assert second < first, (first, second)


def test_a_ltb_tree_that_picks_node_zero_everywhere_shares_it_up_to_the_last_stage(
        tiny_backbones):
    model = build_model(_cfg("ltb", 3), 7).eval()
    trunk = model.encoder
    with torch.no_grad():
        trunk.logits.zero_()
        trunk.logits[:, :, 0] = 5.0  # every node's parent: node 0 of the stage before
        maps = trunk(torch.randn(2, 3, 32, 64))
    per_task = [maps[5 * k:5 * k + 5] for k in range(3)]
    for level in range(4):  # hard sharing: one path below the leaves
        assert torch.equal(per_task[1][level], per_task[0][level])
        assert torch.equal(per_task[2][level], per_task[0][level])
    assert not torch.equal(per_task[1][4], per_task[0][4])  # each task's own last stage


def test_ltb_draws_the_same_trees_again_after_a_reload(tiny_backbones):
    model = build_model(_cfg("ltb", 2), 7).train()
    saved = {k: v.clone() if torch.is_tensor(v) else v for k, v in model.state_dict().items()}
    first = [model.encoder.choices() for _ in range(3)]
    model.load_state_dict(saved)
    again = [model.encoder.choices() for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(((c == 0) | (c == 1)).all() for c in first)  # one-hot forward


def test_cross_stitch_with_self_weight_one_is_independent_backbones(tiny_backbones):
    model = build_model(_cfg("cross_stitch", 2, "model.sharing.self_weight=1.0"), 7).eval()
    image = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        maps = model.encoder(image)
        alone = [b(image) for b in model.encoder.backbones]
    for k in range(2):
        assert all(torch.equal(a, b) for a, b in zip(maps[5 * k:5 * k + 5], alone[k],
                                                     strict=True))


def test_dselect_k_smooth_step_and_gates():
    t = torch.tensor([-1.0, -0.5, 0.0, 0.25, 0.5, 2.0])
    assert smooth_step(t, 1.0).tolist() == pytest.approx([0, 0, 0.5, 0.84375, 1, 1])
    cfg = _cfg("dselect_k", 2)
    gate = build_model(cfg, 7).encoder.gates[0]
    weights = gate(torch.randn(3, 3, 32, 64)).detach()
    assert weights.shape == (3, 4) and torch.allclose(weights.sum(1), torch.ones(3))
    with torch.no_grad():  # saturated selectors pick exactly one expert each
        gate.z_logits.weight.zero_()
        gate.z_logits.bias.copy_(torch.tensor([5.0, -5.0, -5.0, 5.0]))  # codes 10 and 01
        weights = gate(torch.randn(1, 3, 32, 64))[0]
    assert (weights > 0).sum() == 2 and float(weights[2] + weights[1]) == pytest.approx(1.0)


def test_gated_schemes_refuse_another_input_size_and_unknown_settings(tiny_backbones):
    model = build_model(_cfg("mmoe", 2), 7)
    with pytest.raises(InputSizeError, match="dataset.height x dataset.width"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ConfigError, match="model.sharing.experts is not a setting"):
        build_model(_cfg("mmoe", 2, "+model.sharing.experts=2"), 7)
    with pytest.raises(ConfigError, match="power of 2"):
        build_model(_cfg("dselect_k", 2, "model.sharing.num_experts=3"), 7)
    # a checkpoint records the size and the scheme's settings, and refuses other ones
    saved = model_spec(_cfg("mmoe", 2), 7)
    assert saved["input"] == [32, 64] and saved["model.sharing"] == {"num_experts": 3}
    for other, key in (("dataset.height=64", "input"),
                       ("model.sharing.num_experts=2", "model.sharing")):
        with pytest.raises(CheckpointError, match=key):
            check_model_spec(Path("last.pt"), saved, model_spec(_cfg("mmoe", 2, other), 7))
