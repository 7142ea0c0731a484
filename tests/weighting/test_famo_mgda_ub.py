"""FAMO and MGDA-UB against answers worked out by hand, and what the training step gives
them: the losses after the update without touching batch-norm statistics, and the encoder's
output features."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.config import TINY, compose_config
from torch import nn

from xtask_mt.config.validate import validate_config
from xtask_mt.errors import ConfigError
from xtask_mt.weighting import StepContext, encoder_features
from xtask_mt.weighting.famo import FAMOWeighting
from xtask_mt.weighting.mgda_ub import MGDAUBWeighting

TASKS = ("a", "b")


def test_famo_weights_each_task_gradient_by_softmax_over_its_loss():
    famo = FAMOWeighting(TASKS, eps=1e-12)
    x = torch.tensor([2.0, 8.0], requires_grad=True)
    (grad,) = torch.autograd.grad(famo.combine({"a": x[0], "b": x[1]}), x)
    # equal logits: z = (1/2, 1/2); weights z_i / L_i normalised = (1/2, 1/8) / (5/8)
    torch.testing.assert_close(grad, torch.tensor([0.8, 0.2]))
    assert famo.task_weights() == pytest.approx({"a": 0.8, "b": 0.2})


def test_famo_raises_the_logit_of_the_task_whose_loss_fell_least():
    famo = FAMOWeighting(TASKS, logit_lr=0.1, weight_decay=0.0, eps=1e-12)
    famo.combine({"a": torch.tensor(2.0), "b": torch.tensor(8.0)})
    after = {"a": torch.tensor(1.0), "b": torch.tensor(8.0)}  # a halved, b stayed
    famo.after_step(StepContext([], [], losses_after_step=lambda: after))
    # d = (log 2, 0); softmax Jacobian at z = (1/2, 1/2): grad = (log 2 / 4, -log 2 / 4);
    # Adam's first step moves each logit by lr against the sign of its gradient
    torch.testing.assert_close(famo.logits, torch.tensor([-0.1, 0.1]), atol=1e-6, rtol=0)
    famo.combine({"a": torch.tensor(1.0), "b": torch.tensor(1.0)})
    weights = famo.task_weights()
    assert weights["b"] == pytest.approx(1 / (1 + math.exp(-0.2)))  # softmax of (-0.1, 0.1)


def test_famo_clips_the_shared_gradient_at_max_norm_in_unscaled_units():
    class Times8(torch.amp.GradScaler):
        def scale(self, outputs):
            return outputs * 8.0

        def get_scale(self):
            return 8.0

    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    famo = FAMOWeighting(("a",), max_norm=1.0)
    famo.backward({"a": (w * torch.tensor([3.0, 4.0])).sum() ** 2 / 100},
                  StepContext([w], [w], scaler=Times8("cpu")))
    assert w.grad.norm().item() == pytest.approx(8.0, rel=1e-5)  # 1.0 once unscaled


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        low = self.first(x)
        return [low, self.second(low)]


def test_mgda_ub_uses_the_min_norm_weights_of_the_decoder_side_feature_gradients():
    torch.manual_seed(0)
    encoder, head_a, head_b = _Encoder(), nn.Linear(5, 1), nn.Linear(5, 1)
    x = torch.randn(6, 3)

    def losses(features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        h = torch.cat(features, dim=1)
        return {"a": head_a(h).pow(2).mean(), "b": (head_b(h) - 2).abs().mean()}

    # by hand: the gradients at the two outputs as the heads see them, and the closed-form
    # min-norm weight of two vectors
    low = encoder.first(x).detach().requires_grad_()
    high = encoder.second(low).detach().requires_grad_()
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses([low, high])[t],
                                                                  [low, high])])
            for t in TASKS]
    g1, g2 = rows
    a = float(((g2 - g1) @ g2) / (g1 - g2).norm() ** 2)
    a = min(max(a, 0.0), 1.0)

    method = MGDAUBWeighting(TASKS)
    ctx = StepContext(list(encoder.parameters()), [encoder.second.weight])
    with encoder_features(encoder, ctx.features, wanted=True):
        out = encoder(x)
    assert len(ctx.features) == 2
    method.backward(losses(out), ctx)
    assert method.task_weights()["a"] == pytest.approx(a, abs=2e-3)

    weights = method.weights.clone()
    expected = torch.autograd.grad(
        sum(w * v for w, v in zip(weights, losses(encoder(x)).values(), strict=True)),
        list(encoder.parameters()))
    for p, e in zip(encoder.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e)
    (own,) = torch.autograd.grad(losses(encoder(x))["b"], [head_b.weight])
    torch.testing.assert_close(head_b.weight.grad, own)


def test_mgda_ub_without_features_or_under_compile_is_refused():
    with pytest.raises(RuntimeError, match="encoder's output features"):
        MGDAUBWeighting(TASKS).backward({"a": torch.tensor(1.0), "b": torch.tensor(1.0)},
                                        StepContext([], []))
    cfg = compose_config(TINY + ["weighting=mgda_ub", "trainer.compile=true"])
    with pytest.raises(ConfigError, match="trainer.compile=true cannot be combined with "
                                          "weighting=mgda_ub"):
        validate_config(cfg)
    validate_config(compose_config(TINY + ["weighting=pcgrad", "trainer.compile=true"]))


def test_famo_losses_after_the_step_leave_batch_norm_statistics_alone():
    """FAMO's extra forward pass (train mode, no graph) must not move BN running stats: they
    end the step as a method without that pass leaves them."""
    from torch.utils.data import default_collate

    from xtask_mt.config.build import (
        build_dataset,
        build_model,
        build_objective,
        build_optimizer,
        build_weighting,
    )
    from xtask_mt.engine.step import TrainingParts, train_step
    from xtask_mt.runtime.precision import StepOptions

    stats = {}
    for method in ("famo", "fixed"):
        cfg = compose_config(TINY + [f"weighting={method}"])
        torch.manual_seed(0)
        dataset = build_dataset(cfg, "train")
        batch = default_collate([dataset[i] for i in range(2)])
        model = build_model(cfg, dataset.num_classes).train()
        weighting = build_weighting(cfg, model.tasks)
        parts = TrainingParts(model, model, build_objective(cfg), weighting,
                              build_optimizer(cfg, model, weighting),
                              StepOptions(torch.device("cpu")))
        assert train_step(parts, batch, 0).applied
        stats[method] = {k: v.clone() for k, v in model.state_dict().items()
                         if "running" in k or "num_batches" in k}
        if method == "famo":
            assert weighting.logits.abs().sum() > 0  # after_step ran and moved the logits
    assert stats["famo"].keys() == stats["fixed"].keys() and stats["famo"]
    for k in stats["famo"]:
        torch.testing.assert_close(stats["famo"][k], stats["fixed"][k])
