"""DB-MTL, FairGrad, MoCo, STCH, ExcessMTL and SDMGrad against answers worked out by hand from
their update rules on small gradients and losses, and their state in a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.config import TINY, compose_config
from torch import nn

from xtask_mt.config.validate import validate_config
from xtask_mt.errors import ConfigError
from xtask_mt.weighting import StepContext
from xtask_mt.weighting.db_mtl import DBMTLWeighting
from xtask_mt.weighting.excess_mtl import ExcessMTLWeighting
from xtask_mt.weighting.fairgrad import FairGradWeighting
from xtask_mt.weighting.moco import MoCoWeighting
from xtask_mt.weighting.sdmgrad import SDMGradWeighting
from xtask_mt.weighting.simplex import project_to_simplex
from xtask_mt.weighting.stch import STCHWeighting

TASKS = ("a", "b")
G1, G2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # conflicting: G1 . G2 = -1
MIN_NORM = 0.6 * G1 + 0.4 * G2  # MGDA's answer for G1, G2 (see test_methods.py)
ONES = {"a": torch.tensor(1.0), "b": torch.tensor(1.0)}


def _losses(a: float, b: float) -> dict[str, torch.Tensor]:
    return {"a": torch.tensor(a), "b": torch.tensor(b)}


@pytest.mark.parametrize(("v", "expected"), [
    ([0.5, 0.2, 0.1], [0.5 + 0.2 / 3, 0.2 + 0.2 / 3, 0.1 + 0.2 / 3]),  # shift by (1 - 0.8) / 3
    ([0.6, 0.5, -3.0], [0.55, 0.45, 0.0]),  # theta = (0.6 + 0.5 - 1) / 2
    ([2.0, 0.0, -1.0], [1.0, 0.0, 0.0]),    # theta = 1
])
def test_simplex_projection(v, expected):
    torch.testing.assert_close(project_to_simplex(torch.tensor(v, dtype=torch.float64)),
                               torch.tensor(expected, dtype=torch.float64))


def test_db_mtl_scales_each_averaged_log_gradient_to_the_largest():
    db = DBMTLWeighting(TASKS, beta=0.5, beta_sigma=1.0, eps=1e-12)
    # step 1: log-gradients g / L = (1, 0) and (0, 3); b_1 = 0.5: h = (0.5, 0), (0, 1.5);
    # norms 0.5, 1.5: scales (3, 1), update 3 (0.5, 0) + (0, 1.5)
    update = db.shared_update(torch.tensor([[2.0, 0.0], [0.0, 3.0]]), _losses(2.0, 1.0))
    torch.testing.assert_close(update, torch.tensor([1.5, 1.5]))
    assert db.task_weights() == pytest.approx({"a": 3.0, "b": 1.0})
    # step 2: log-gradients (0, 1) and (1, 0); b_2 = 0.5 / 2
    update = db.shared_update(torch.tensor([[0.0, 4.0], [3.0, 0.0]]), _losses(4.0, 3.0))
    h_a = [0.25 * 0.5 + 0.75 * 0.0, 0.25 * 0.0 + 0.75 * 1.0]
    h_b = [0.25 * 0.0 + 0.75 * 1.0, 0.25 * 1.5 + 0.75 * 0.0]
    n_a, n_b = math.hypot(*h_a), math.hypot(*h_b)
    expected = [n_b / n_a * h_a[i] + h_b[i] for i in range(2)]
    torch.testing.assert_close(update, torch.tensor(expected))


def test_db_mtl_trains_the_heads_on_log_losses_and_the_encoder_on_its_update():
    torch.manual_seed(0)
    shared, head_a, head_b = nn.Linear(3, 3), nn.Linear(3, 1), nn.Linear(3, 1)
    x = torch.randn(8, 3)

    def losses() -> dict[str, torch.Tensor]:
        h = shared(x)
        return {"a": head_a(h).pow(2).mean(), "b": (head_b(h) - 1).abs().mean()}

    params = list(shared.parameters())
    values = losses()
    jacobian = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        values[t], params, retain_graph=True)]) for t in TASKS])
    log_grads = jacobian / torch.stack([values[t] for t in TASKS]).detach()[:, None]
    h = 0.1 * log_grads  # b_1 = 0.9, h starting at 0
    norms = h.norm(dim=1)
    expected = (norms.max() / norms) @ h

    method = DBMTLWeighting(TASKS)
    total = method.backward(losses(), StepContext(params, [shared.weight]))
    assert total.detach().item() == pytest.approx(
        sum(math.log(float(values[t].detach())) for t in TASKS))
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in params]), expected)
    (own,) = torch.autograd.grad(losses()["a"].log(), [head_a.weight])
    torch.testing.assert_close(head_a.weight.grad, own)


def test_a_method_state_sized_at_the_first_step_survives_a_checkpoint():
    jacobian = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, -1.0]])
    for method in (DBMTLWeighting(TASKS), MoCoWeighting(TASKS), ExcessMTLWeighting(TASKS)):
        fresh = type(method)(TASKS)
        if isinstance(method, ExcessMTLWeighting):
            method.update(jacobian)
        else:
            method.shared_update(jacobian, ONES)
        state = method.state_dict()
        assert max(v.numel() for v in state.values()) == 6  # K x P
        fresh.load_state_dict(state)
        for key, value in fresh.state_dict().items():
            torch.testing.assert_close(value, state[key])


def test_moco_tracks_the_gradients_and_takes_one_projected_step_on_the_weights():
    moco = MoCoWeighting(TASKS, beta=0.5, beta_sigma=0.0, gamma=1.0, gamma_sigma=0.0)
    update = moco.shared_update(torch.stack([G1, G2]), ONES)
    # y = 0.5 G = (0.5, 0), (-0.5, 0.5); Y Y^T = [[0.25, -0.25], [-0.25, 0.5]];
    # lam = P((1/2, 1/2) - (0, 0.125)) = P(0.5, 0.375) = (0.5625, 0.4375)
    assert moco.task_weights() == pytest.approx({"a": 0.5625, "b": 0.4375})
    torch.testing.assert_close(update, torch.tensor([0.0625, 0.21875]))


def test_moco_on_fixed_gradients_settles_on_the_min_norm_weights():
    moco = MoCoWeighting(TASKS, beta=1.0, beta_sigma=0.0, gamma=0.5, gamma_sigma=0.0)
    for _ in range(300):
        update = moco.shared_update(torch.stack([G1, G2]), ONES)
    assert moco.task_weights() == pytest.approx({"a": 0.6, "b": 0.4}, abs=1e-4)
    torch.testing.assert_close(update, MIN_NORM, atol=1e-4, rtol=0)


def test_sdmgrad_without_the_pull_is_mgda_and_with_it_moves_towards_the_mean():
    """Enough inner steps, small enough to converge, reach the regularised min-norm point."""
    plain = SDMGradWeighting(TASKS, lam=0.0, niter=300, inner_lr=0.2)
    torch.testing.assert_close(plain.shared_update(torch.stack([G1, G2]), ONES), MIN_NORM,
                               atol=1e-4, rtol=0)
    # with the pull, w = (t, 1 - t) minimises w^T A w / 2 + lam w^T A 1 / 2 (any scale of
    # A): t = -(u^T A e2 + lam / 2 u^T A 1) / u^T A u with u = (1, -1)
    lam = 0.5
    a = torch.tensor([[G1 @ G1, G1 @ G2], [G2 @ G1, G2 @ G2]])
    u = torch.tensor([1.0, -1.0])
    t = float(-(u @ a @ torch.tensor([0.0, 1.0]) + lam / 2 * u @ a @ torch.ones(2))
              / (u @ a @ u))
    pulled = SDMGradWeighting(TASKS, lam=lam, niter=300, inner_lr=0.2)
    weights = [(t + lam / 2) / (1 + lam), (1 - t + lam / 2) / (1 + lam)]
    torch.testing.assert_close(pulled.shared_update(torch.stack([G1, G2]), ONES),
                               weights[0] * G1 + weights[1] * G2, atol=1e-4, rtol=0)
    assert pulled.task_weights() == pytest.approx(dict(zip(TASKS, weights, strict=True)), abs=1e-4)


def test_sdmgrad_takes_heavy_ball_steps_from_the_last_weights():
    """Two inner steps by hand: A = G G^T / s^2 with s = (1 + sqrt 2) / 2, lr 0.1,
    momentum 0.5; the weights stay positive, so the projection onto the simplex shifts both
    by the same amount to make them sum to 1."""
    method = SDMGradWeighting(TASKS, lam=0.0, niter=2, inner_lr=0.1, inner_momentum=0.5)
    s2 = ((1 + math.sqrt(2)) / 2) ** 2
    a = [[1 / s2, -1 / s2], [-1 / s2, 2 / s2]]
    w, v = [0.5, 0.5], [0.0, 0.0]
    for _ in range(2):
        grad = [a[0][0] * w[0] + a[0][1] * w[1], a[1][0] * w[0] + a[1][1] * w[1]]
        v = [0.5 * v[i] + grad[i] for i in range(2)]
        w = [w[i] - 0.1 * v[i] for i in range(2)]
        w = [w[i] + (1 - w[0] - w[1]) / 2 for i in range(2)]
        assert min(w) > 0
    method.shared_update(torch.stack([G1, G2]), ONES)
    assert method.task_weights() == pytest.approx(dict(zip(TASKS, w, strict=True)))
    torch.testing.assert_close(method.simplex_weights, torch.tensor(w))  # the next start


def test_sdmgrad_weights_match_torchjds_over_warm_started_calls():
    """torchjd's SDMGradWeighting, given the same Gram matrix for its two independent
    batches, returns the combination weights (w + lam / K) / (1 + lam) and keeps w between
    calls as we do (its state is not a module buffer, so not in a checkpoint)."""
    from torchjd.aggregation import SDMGradWeighting as Reference

    torch.manual_seed(0)
    jacobian = torch.randn(3, 40)
    reference = Reference(lr=5.0, momentum=0.5, n_iter=20, lambda_=0.3)
    ours = SDMGradWeighting(("a", "b", "c"))
    for _ in range(3):
        expected = reference(jacobian @ jacobian.T)
        ours.shared_update(jacobian, ONES)
        torch.testing.assert_close(ours.weights, expected.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_fairgrad_on_orthogonal_gradients_has_a_closed_form(alpha):
    """Orthogonal g_i: |g_i|^2 w_i = w_i^(-1/alpha), so w_i = |g_i|^(-2 alpha / (alpha + 1));
    alpha = 1 gives Nash-MTL's 1 / |g_i|."""
    g1, g2 = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.5])
    jacobian = torch.stack([g1, g2])
    w = FairGradWeighting(TASKS, alpha=alpha).solve(jacobian @ jacobian.T)
    power = -2 * alpha / (alpha + 1)
    torch.testing.assert_close(w, torch.tensor([2.0**power, 0.5**power], dtype=torch.float64),
                               atol=1e-6, rtol=1e-6)


def test_fairgrad_weights_solve_its_equation_and_train_the_weighted_sum():
    class Times8(torch.amp.GradScaler):
        def scale(self, outputs):
            return outputs * 8.0

        def get_scale(self):
            return 8.0

    torch.manual_seed(0)
    shared, head = nn.Linear(2, 2), nn.Linear(2, 2)
    x = torch.randn(8, 2)

    def losses() -> dict[str, torch.Tensor]:
        out = head(shared(x))
        return {"a": out[:, 0].pow(2).mean(), "b": (out[:, 1] - 1).abs().mean()}

    params = list(shared.parameters())
    jacobian = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        losses()[t], params)]) for t in TASKS])
    method = FairGradWeighting(TASKS, alpha=2.0)
    method.backward(losses(), StepContext(params, [shared.weight], scaler=Times8("cpu")))
    w = method.weights.double()
    gram = (jacobian @ jacobian.T).double()
    assert (w > 0).all()
    torch.testing.assert_close(gram @ w, w ** -0.5, atol=1e-5, rtol=1e-5)  # unscaled G
    expected = 8 * (method.weights @ jacobian)
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in params]), expected,
                               atol=1e-5, rtol=1e-5)


def test_excess_mtl_raises_the_weight_of_the_task_with_more_excess_risk():
    method = ExcessMTLWeighting(TASKS, step_size=0.5)
    method.update(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
    # first step: excess g^2 / sqrt(g^2) summed = (7, 1) kept as the scale; weights stay 1
    torch.testing.assert_close(method.initial_excess, torch.tensor([7.0, 1.0]))
    assert method.task_weights() == {"a": 1.0, "b": 1.0}
    method.update(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
    # sums of squares (18, 32) and (1, 4): excess (9/sqrt 18 + 16/sqrt 32, 0 + 4/2)
    ratio_a, ratio_b = (9 / math.sqrt(18) + 16 / math.sqrt(32)) / 7, 2.0 / 1
    raised = [math.exp(0.5 * ratio_a), math.exp(0.5 * ratio_b)]
    expected = [2 * r / sum(raised) for r in raised]
    assert list(method.task_weights().values()) == pytest.approx(expected, rel=1e-5)
    total = method.combine(_losses(2.0, 3.0))
    assert total.item() == pytest.approx(2 * expected[0] + 3 * expected[1], rel=1e-5)


def test_stch_sums_log_losses_while_warming_up_then_takes_a_smooth_max():
    method = STCHWeighting(TASKS, mu=1.0, warmup_epochs=2)
    x = torch.tensor([1.0, 4.0], requires_grad=True)
    (grad,) = torch.autograd.grad(method.combine({"a": x[0], "b": x[1]}), x)
    torch.testing.assert_close(grad, torch.tensor([1.0, 0.25]))  # 1 / L
    method.epoch_end({"a": 3.0, "b": 3.0})
    method.epoch_end({"a": 2.0, "b": 4.0})  # the last warm-up epoch: z = (2, 4)
    torch.testing.assert_close(method.nadir, torch.tensor([2.0, 4.0]))
    total = method.combine({"a": x[0], "b": x[1]})
    # log(L / z) = (log 0.5, 0): total = 2 log(0.5 + 1); softmax = (1/3, 2/3), and
    # dL_i = 2 softmax_i / L_i
    assert total.item() == pytest.approx(2 * math.log(1.5))
    (grad,) = torch.autograd.grad(total, x)
    torch.testing.assert_close(grad, torch.tensor([2 * (1 / 3) / 1, 2 * (2 / 3) / 4]))
    method.epoch_end({"a": 1.0, "b": 1.0})  # after the warm-up z stays
    torch.testing.assert_close(method.nadir, torch.tensor([2.0, 4.0]))


@pytest.mark.parametrize(("override", "message"), [
    ("weighting=stch weighting.warmup_epochs=0", "warmup_epochs must be an integer >= 1"),
    ("weighting=sdmgrad weighting.niter=0", "niter must be an integer >= 1"),
    ("weighting=moco weighting.beta=0", r"beta must be a number in \(0, 1\]"),
    ("weighting=fairgrad weighting.alpha=-1", "alpha must be a number > 0"),
    ("weighting=excess_mtl weighting.step_size=0", "step_size must be a number > 0"),
    ("weighting=db_mtl weighting.beta=2", r"beta must be a number in \[0, 1\]"),
])
def test_a_bad_setting_is_one_line_before_any_work(override, message):
    with pytest.raises(ConfigError, match=f"invalid config for weighting=.*{message}"):
        validate_config(compose_config(TINY + override.split()))


@pytest.mark.slow
def test_stch_takes_its_reference_point_from_the_last_warm_up_epoch(tmp_path):
    from xtask_mt.engine.checkpoint import load_checkpoint
    from xtask_mt.engine.trainer import train

    cfg = compose_config(TINY + ["weighting=stch", "weighting.warmup_epochs=1",
                                 "trainer.epochs=2", "model.decoder_width=16"])
    summary = train(cfg, tmp_path)
    first, second = summary["history"]
    nadir = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["weighting"]["nadir"]
    assert nadir.tolist() == pytest.approx([first["train/task_seg"], first["train/task_depth"]],
                                           rel=1e-6)
    assert math.isfinite(second["train/total"])
    # the second epoch's logged weights are STCH's, not the warm-up's 1 / L
    assert second["train/weight_seg"] != pytest.approx(1 / second["train/task_seg"], rel=1e-3)
