"""The loss- and gradient-based weighting methods against answers worked out by hand on
small gradients and losses, and their wiring into a training step."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.config import TINY, compose_config
from torch import nn

from xtask_mt.config.build import build_weighting
from xtask_mt.errors import ConfigError
from xtask_mt.weighting import StepContext
from xtask_mt.weighting.dwa import DWAWeighting
from xtask_mt.weighting.gls import GeometricMeanWeighting
from xtask_mt.weighting.gradients import GradientAggregation
from xtask_mt.weighting.rlw import RLWWeighting
from xtask_mt.weighting.scale_invariant import ScaleInvariantWeighting

TASKS = ("a", "b")
G1, G2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # conflicting: G1 . G2 = -1


def _aggregate(method: str, *rows: torch.Tensor, **options) -> torch.Tensor:
    return GradientAggregation(TASKS, method, **options).aggregate(torch.stack(rows))


def test_pcgrad_projects_each_gradient_off_the_other():
    # G1 - (G1.G2)/|G2|^2 G2 = (0.5, 0.5); G2 - (G2.G1)/|G1|^2 G1 = (0, 1); summed
    torch.testing.assert_close(_aggregate("pcgrad", G1, G2), torch.tensor([0.5, 1.5]))
    # no conflict: nothing is projected
    torch.testing.assert_close(_aggregate("pcgrad", G1, torch.tensor([1.0, 1.0])),
                               torch.tensor([2.0, 1.0]))


def test_mgda_finds_the_min_norm_point_of_two_gradients():
    # a G1 + (1 - a) G2 with a = (G2 - G1).G2 / |G1 - G2|^2 = 3/5
    torch.testing.assert_close(_aggregate("mgda", G1, G2), 0.6 * G1 + 0.4 * G2, atol=1e-3,
                               rtol=1e-3)


def test_imtl_g_projects_equally_onto_both_gradients():
    u = G1 / G1.norm() - G2 / G2.norm()
    a = -(G2 @ u) / ((G1 - G2) @ u)
    expected = a * G1 + (1 - a) * G2
    got = _aggregate("imtl_g", G1, G2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert got @ G1 / G1.norm() == pytest.approx(float(got @ G2 / G2.norm()), abs=1e-5)


def test_cagrad_with_c_zero_is_the_mean_gradient():
    torch.testing.assert_close(_aggregate("cagrad", G1, G2, c=0.0), (G1 + G2) / 2, atol=1e-4,
                               rtol=1e-4)


def test_nash_mtl_on_orthogonal_gradients_weighs_each_by_its_inverse_norm():
    """Orthogonal g1, g2: the bargaining solution solves (G G^T) a = 1 / a, so a_i = 1/|g_i|
    and the update is (1, 1) here; Nash-MTL then caps its norm at max_norm."""
    g1, g2 = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.5])
    torch.testing.assert_close(_aggregate("nash_mtl", g1, g2, max_norm=10.0),
                               torch.tensor([1.0, 1.0]), atol=1e-3, rtol=1e-3)
    capped = _aggregate("nash_mtl", g1, g2, max_norm=1.0)
    torch.testing.assert_close(capped, torch.tensor([1.0, 1.0]) / math.sqrt(2), atol=1e-3,
                               rtol=1e-3)


def test_dwa_weights_from_a_loss_history():
    dwa = DWAWeighting(TASKS, temperature=2.0)
    dwa.epoch_end({"a": 1.0, "b": 2.0})
    assert dwa.task_weights() == {"a": 1.0, "b": 1.0}  # one epoch: no rate yet
    dwa.epoch_end({"a": 0.5, "b": 1.8})
    r = torch.tensor([0.5 / 1.0, 1.8 / 2.0])
    expected = 2 * torch.softmax(r / 2.0, 0)
    assert list(dwa.task_weights().values()) == pytest.approx(expected.tolist())
    assert dwa.task_weights()["b"] > dwa.task_weights()["a"]  # b fell more slowly
    total = dwa.combine({"a": torch.tensor(3.0), "b": torch.tensor(5.0)})
    assert total.item() == pytest.approx(float(expected @ torch.tensor([3.0, 5.0])))


def test_rlw_weights_sum_to_the_number_of_tasks_and_change_each_step():
    rlw = RLWWeighting(("a", "b", "c"))
    losses = {t: torch.tensor(1.0) for t in ("a", "b", "c")}
    seen = []
    for _ in range(3):
        rlw.combine(losses)
        seen.append(list(rlw.task_weights().values()))
        assert sum(seen[-1]) == pytest.approx(3.0)
    assert seen[0] != seen[1] != seen[2]


def test_log_methods_scale_each_task_gradient_by_its_loss():
    x = torch.tensor([2.0, 8.0], requires_grad=True)
    losses = {"a": x[0], "b": x[1]}
    (grad,) = torch.autograd.grad(ScaleInvariantWeighting(TASKS).combine(losses), x)
    torch.testing.assert_close(grad, torch.tensor([1 / 2.0, 1 / 8.0]))
    total = GeometricMeanWeighting(TASKS).combine(losses)
    assert total.item() == pytest.approx(4.0)  # sqrt(2 * 8)
    (grad,) = torch.autograd.grad(total, x)
    torch.testing.assert_close(grad, torch.tensor([4.0 / (2 * 2.0), 4.0 / (2 * 8.0)]))


def test_a_gradient_method_replaces_the_shared_gradient_and_leaves_the_heads_their_own():
    torch.manual_seed(0)
    shared, head_a, head_b = nn.Linear(3, 3), nn.Linear(3, 1), nn.Linear(3, 1)
    x = torch.randn(8, 3)

    def losses() -> dict[str, torch.Tensor]:
        h = shared(x)
        return {"a": head_a(h).pow(2).mean(), "b": (head_b(h) - 1).abs().mean()}

    method = GradientAggregation(TASKS, "pcgrad")
    params = list(shared.parameters())
    jacobian = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        losses()[t], params)]) for t in TASKS])
    method.backward(losses(), StepContext(params, [shared.weight]))
    got = torch.cat([p.grad.reshape(-1) for p in params])
    torch.testing.assert_close(got, method.aggregate(jacobian))
    (own,) = torch.autograd.grad(losses()["a"], [head_a.weight])
    torch.testing.assert_close(head_a.weight.grad, own)


def test_a_method_without_its_solver_fails_in_one_line(monkeypatch):
    from torchjd import aggregation

    def missing(*args, **kwargs):
        raise ImportError("NashMTL requires ['cvxpy', 'ecos'] to be installed.")

    monkeypatch.setattr(aggregation, "NashMTL", missing)
    with pytest.raises(ConfigError, match="weighting=nash_mtl .*requires.*cvxpy"):
        build_weighting(compose_config(TINY + ["weighting=nash_mtl"]), ("seg", "depth"))


METHODS = ["fixed", "uncertainty", "gradnorm", "dwa", "rlw", "gls", "scale_invariant", "famo",
           "pcgrad", "mgda", "mgda_ub", "imtl_g", "cagrad", "nash_mtl", "aligned_mtl", "upgrad",
           "graddrop", "gradvac", "config",
           "db_mtl", "fairgrad", "moco", "stch", "excess_mtl", "sdmgrad"]


# bf16 autocast changes a method's inputs only where it reaches past the fp32 losses and
# the fp32 parameter gradients: GradNorm's gradient of a gradient through the autocast
# graph, FAMO's extra forward pass, MGDA-UB's bf16 encoder features; PCGrad stands for the
# aggregators over the task Jacobian, which is fp32 under either precision. The other
# methods see the same fp32 numbers under bf16, so their fp32 run covers them.
BF16_METHODS = ["gradnorm", "famo", "mgda_ub", "pcgrad"]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "precision"), [
    *((m, "32") for m in METHODS), *((m, "bf16-mixed") for m in BF16_METHODS)])
def test_every_method_trains_the_synthetic_job(tmp_path, method, precision):
    from xtask_mt.engine.trainer import train

    cfg = compose_config(TINY + [f"weighting={method}", f"trainer.precision={precision}",
                                 "model.decoder_width=16"])
    summary = train(cfg, tmp_path)
    assert len(summary["history"]) == 1
    assert all(math.isfinite(v) for v in summary["final"].values())
    assert math.isfinite(summary["train"]["total"])


def test_a_gradient_method_combines_unscaled_gradients_and_hands_back_scaled_ones():
    """Under fp16 the task gradients arrive multiplied by the loss scale. Nash-MTL is not
    scale-equivariant (its update does not grow with the gradients), so combining scaled
    gradients would give another update; the method must unscale, combine, then rescale."""

    class Times8(torch.amp.GradScaler):
        def scale(self, outputs):
            return outputs * 8.0

        def get_scale(self):
            return 8.0

    torch.manual_seed(0)
    shared = nn.Linear(2, 2)
    x = torch.randn(8, 2)

    def losses() -> dict[str, torch.Tensor]:
        h = shared(x)
        return {"a": h[:, 0].pow(2).mean(), "b": (h[:, 1] - 1).abs().mean()}

    params = list(shared.parameters())
    jacobian = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        losses()[t], params)]) for t in TASKS])
    expected = _aggregate("nash_mtl", *jacobian)
    assert not torch.allclose(_aggregate("nash_mtl", *(8 * jacobian)), 8 * expected,
                              atol=1e-3, rtol=1e-3)
    GradientAggregation(TASKS, "nash_mtl").backward(
        losses(), StepContext(params, [shared.weight], scaler=Times8("cpu")))
    got = torch.cat([p.grad.reshape(-1) for p in params])
    torch.testing.assert_close(got, 8 * expected, atol=1e-3, rtol=1e-3)
