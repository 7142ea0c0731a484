"""Task weightings move in the right direction on toy problems."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xtask_mt.weighting import (
    FixedWeighting,
    GradNormWeighting,
    StepContext,
    UncertaintyWeighting,
)


def test_fixed_is_weighted_sum():
    w = FixedWeighting(("seg", "depth"), {"seg": 2.0, "depth": 0.5})
    total = w.combine({"seg": torch.tensor(3.0), "depth": torch.tensor(4.0)})
    assert total.item() == pytest.approx(8.0)
    assert w.task_weights() == {"seg": 2.0, "depth": 0.5}


def test_uncertainty_formula_and_direction():
    w = UncertaintyWeighting(("seg", "depth"))
    losses = {"seg": torch.tensor(10.0), "depth": torch.tensor(0.1)}
    total = w.combine(losses)
    assert total.item() == pytest.approx(0.5 * 10.0 + 0.5 * 0.1)  # s = 0 initially
    opt = torch.optim.SGD(w.parameters(), lr=0.05)
    for _ in range(50):
        opt.zero_grad()
        w.combine(losses).backward()
        opt.step()
    weights = w.task_weights()
    # the task with the larger loss is down-weighted, the small one up-weighted
    assert weights["seg"] < 0.5 < weights["depth"]


def test_gradnorm_shifts_weight_to_the_slower_task():
    torch.manual_seed(0)
    shared = nn.Linear(4, 4)
    head_a, head_b = nn.Linear(4, 1), nn.Linear(4, 1)
    x = torch.randn(32, 4)
    weighting = GradNormWeighting(("a", "b"), asymmetry=1.5)
    ctx = StepContext(list(shared.parameters()), [shared.weight])
    opt = torch.optim.SGD(list(weighting.parameters()), lr=0.05)

    def losses(step: int) -> dict[str, torch.Tensor]:
        h = shared(x)
        # task a's loss drops fast (it is being solved); task b's stays put
        a = (head_a(h) ** 2).mean() * (0.5**step)
        b = (head_b(h) ** 2).mean()
        return {"a": a, "b": b}

    first = losses(0)
    weighting.train()
    opt.zero_grad()
    weighting.backward(first, ctx)
    initial = weighting.initial_losses.clone()
    opt.step()
    weighting.after_step(ctx)
    for step in range(1, 30):
        opt.zero_grad()
        weighting.backward(losses(step), ctx)
        opt.step()
        weighting.after_step(ctx)
    weights = weighting.task_weights()
    assert weights["b"] > weights["a"]
    assert sum(weights.values()) == pytest.approx(2.0, rel=1e-5)
    # initial losses come from the first step only
    assert torch.equal(weighting.initial_losses, initial)


def test_gradnorm_trains_the_network_on_the_detached_weights():
    """The network's gradient is that of sum_i w_i L_i; w's comes from the GradNorm loss."""
    torch.manual_seed(1)
    shared = nn.Linear(3, 3)
    weighting = GradNormWeighting(("a", "b"))
    with torch.no_grad():
        weighting.weights.copy_(torch.tensor([0.5, 1.5]))
    x = torch.randn(5, 3)
    ctx = StepContext(list(shared.parameters()), [shared.weight])
    h = shared(x)
    total = weighting.backward({"a": h.pow(2).mean(), "b": h.abs().mean()}, ctx)
    network_grad = shared.weight.grad.clone()
    shared.weight.grad = None
    h = shared(x)
    (0.5 * h.pow(2).mean() + 1.5 * h.abs().mean()).backward()
    torch.testing.assert_close(network_grad, shared.weight.grad)
    assert total.item() == pytest.approx((0.5 * h.pow(2).mean() + 1.5 * h.abs().mean()).item())
    assert weighting.weights.grad is not None and weighting.weights.grad.abs().sum() > 0


def test_the_default_backward_goes_through_the_loss_scaler():
    """Scalar methods backpropagate ctx.scale(total): with a scaler, the scaled loss."""

    class Times(torch.amp.GradScaler):
        def scale(self, outputs):
            return outputs * 8.0

    x = torch.ones(2, requires_grad=True)
    FixedWeighting(("a",)).backward({"a": x.sum()}, StepContext([], [], scaler=Times("cpu")))
    assert torch.equal(x.grad, torch.full((2,), 8.0))
