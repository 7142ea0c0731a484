"""The objective built from the config: task losses composed from the direct and consistency
terms of each edge, consistency targets detached, outputs left as they are."""

from __future__ import annotations

import pytest
import torch
from helpers.config import compose_config

from xtask_mt.config.build import build_objective
from xtask_mt.losses import ConsistencyTerm, TaskObjective


def _outputs(requires_grad: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(4)
    return {k: torch.randn(*s, requires_grad=requires_grad) for k, s in
            {"seg": (2, 3, 8, 8), "depth": (2, 1, 8, 8), "seg_to_depth": (2, 1, 8, 8),
             "depth_to_seg": (2, 3, 8, 8)}.items()}


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    return {"seg": torch.randint(0, 3, (2, 8, 8)), "depth": torch.rand(2, 1, 8, 8) + 0.1,
            "depth_mask": torch.rand(2, 1, 8, 8) > 0.2}


def test_alpha_and_gamma_weigh_the_seed_edges():
    objective = build_objective(compose_config(["loss.alpha=0.3", "loss.gamma=0.6"]))
    loss = objective(_outputs(), _batch())
    t = loss.terms
    assert loss.tasks["seg"].item() == pytest.approx(
        (0.7 * t["seg"] + 0.3 * t["seg_to_depth"]).item())
    assert loss.tasks["depth"].item() == pytest.approx(
        (0.4 * t["depth"] + 0.6 * t["depth_to_seg"]).item())


def test_edge_weights_of_one_source_share_its_direct_weight():
    """(1 - w1 - w2) * direct + w1 * c1 + w2 * c2, with hand-made terms."""
    direct = {"a": lambda pred, batch: pred.sum(), "b": lambda pred, batch: pred.sum(),
              "c": lambda pred, batch: pred.sum()}
    targets = {name: (lambda pred: pred.detach()) for name in direct}
    terms = [ConsistencyTerm("a_to_b", "a", "b", 0.2, lambda t, goal, batch: t.sum() * 10),
             ConsistencyTerm("a_to_c", "a", "c", 0.3, lambda t, goal, batch: t.sum() * 100)]
    out = {k: torch.ones(()) for k in ("a", "b", "c", "a_to_b", "a_to_c")}
    loss = TaskObjective(direct, targets, terms)(out, {})
    assert loss.tasks["a"].item() == pytest.approx(0.5 * 1 + 0.2 * 10 + 0.3 * 100)
    assert loss.tasks["b"].item() == 1.0 and loss.tasks["c"].item() == 1.0


@pytest.mark.parametrize("tdepth,tseg", [("l1", "cross"), ("ssim", "kl")])
def test_consistency_targets_are_detached(tdepth, tseg):
    """A consistency term's gradient reaches the transferred output only, never the direct
    prediction it is compared with."""
    objective = build_objective(compose_config([f"loss/tdepth={tdepth}", f"loss/tseg={tseg}"]))
    out = _outputs(requires_grad=True)
    loss = objective(out, _batch())
    for edge, target in (("seg_to_depth", "depth"), ("depth_to_seg", "seg")):
        g_edge, g_target = torch.autograd.grad(loss.terms[edge], [out[edge], out[target]],
                                               allow_unused=True)
        assert g_edge is not None and g_edge.abs().sum() > 0
        assert g_target is None or g_target.abs().sum() == 0


def test_model_outputs_are_not_modified_in_place():
    objective = build_objective(compose_config(["loss/tdepth=ssim", "loss/tseg=kl",
                                                "loss.label_smoothing=0.1"]))
    out, batch = _outputs(), _batch()
    before = {k: v.clone() for k, v in out.items()}
    objective(out, batch)
    for k in out:
        assert torch.equal(out[k], before[k])


def test_terms_of_missing_outputs_are_skipped_and_weight_goes_back_to_direct():
    objective = build_objective(compose_config([]))
    out = {k: v for k, v in _outputs().items() if k in ("seg", "depth")}
    loss = objective(out, _batch())
    assert set(loss.terms) == {"seg", "depth"}
    assert torch.equal(loss.tasks["seg"], loss.terms["seg"])


def test_unknown_loss_names_are_refused():
    cfg = compose_config([])
    cfg.loss.depth.name = "huber"
    with pytest.raises(ValueError, match="huber"):
        build_objective(cfg)


def test_an_edge_without_a_weight_is_named():
    cfg = compose_config(["~loss.consistency.seg_to_depth"])
    with pytest.raises(Exception, match="seg_to_depth"):
        build_objective(cfg)
