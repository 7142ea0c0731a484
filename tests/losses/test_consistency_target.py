"""What a transferred prediction is trained towards (loss.consistency_target) and the seed's
label smoothing rule (loss.label_smoothing_rule), on hand-made batches."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.config import compose_config

from xtask_mt.config.build import build_objective
from xtask_mt.config.validate import validate_config
from xtask_mt.errors import ConfigError
from xtask_mt.losses import transferred_seg_loss
from xtask_mt.sample import IGNORE_INDEX

LN2 = math.log(2.0)


def _hand_made() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One 1x3 image, 2 classes: labels 0, 1, ignored; depth 0.5, 0.2, 0.3 with the second
    invalid. The direct predictions disagree with the labels, so the two targets differ."""
    log3 = math.log(3.0)
    out = {"seg": torch.tensor([[[[0.0, 5.0, 0.0]], [[5.0, 0.0, 0.0]]]]),  # classes 1, 0, 0
           "depth": torch.tensor([[[[0.3, 0.0, 0.0]]]]),
           "depth_to_seg": torch.tensor([[[[0.0, log3, 7.0]], [[0.0, 0.0, 0.0]]]]),
           "seg_to_depth": torch.tensor([[[[0.1, 9.0, 0.5]]]])}
    batch = {"seg": torch.tensor([[[0, 1, IGNORE_INDEX]]]),
             "depth": torch.tensor([[[[0.5, 0.2, 0.3]]]]),
             "depth_mask": torch.tensor([[[[True, False, True]]]])}
    return out, batch


def test_the_label_target_trains_transferred_predictions_against_the_ground_truth():
    out, batch = _hand_made()
    terms = build_objective(compose_config(["loss.consistency_target=label"]))(out, batch).terms
    # depth_to_seg: CE at label 0 of (0, 0) is ln 2, at label 1 of (ln 3, 0) is ln 4
    assert terms["depth_to_seg"].item() == pytest.approx((LN2 + 2 * LN2) / 2)
    # seg_to_depth: L1 to the valid ground truth: |0.1 - 0.5| and |0.5 - 0.3|
    assert terms["seg_to_depth"].item() == pytest.approx((0.4 + 0.2) / 2)
    # the prediction target: CE at the direct classes 1, 0 (ln 2, ln 4/3); L1 to the
    # direct depth on the valid pixels (|0.1 - 0.3|, |0.5 - 0|)
    terms = build_objective(compose_config([]))(out, batch).terms
    assert terms["depth_to_seg"].item() == pytest.approx((LN2 + math.log(4 / 3)) / 2)
    assert terms["seg_to_depth"].item() == pytest.approx((0.2 + 0.5) / 2)


def test_the_label_target_weighs_into_the_source_task_as_the_prediction_target_does():
    out, batch = _hand_made()
    loss = build_objective(compose_config(["loss.consistency_target=label", "loss.alpha=0.25",
                                           "loss.gamma=0.5"]))(out, batch)
    t = loss.terms
    assert loss.tasks["seg"].item() == pytest.approx((0.75 * t["seg"] + 0.25 *
                                                      t["seg_to_depth"]).item())
    assert loss.tasks["depth"].item() == pytest.approx((0.5 * t["depth"] + 0.5 *
                                                        t["depth_to_seg"]).item())


def test_the_label_target_uses_each_tasks_direct_loss_on_any_edge():
    """depth -> normal is trained by the normal loss against the normal ground truth."""
    overrides = ["dataset=nyuv2", "model.tasks=[seg,depth,normal]",
                 "model.transfer.edges=[[depth,normal]]", "loss.consistency_target=label"]
    objective = build_objective(compose_config(overrides))
    up = torch.zeros(1, 3, 1, 2)
    up[:, 1] = 1.0
    sideways = torch.zeros(1, 3, 1, 2)
    sideways[:, 0] = 1.0
    out = {"seg": torch.zeros(1, 2, 1, 2), "depth": torch.ones(1, 1, 1, 2), "normal": up,
           "depth_to_normal": sideways}
    batch = {"seg": torch.zeros(1, 1, 2, dtype=torch.long), "depth": torch.ones(1, 1, 1, 2),
             "depth_mask": torch.ones(1, 1, 1, 2, dtype=torch.bool), "normal": sideways}
    terms = objective(out, batch).terms
    assert terms["depth_to_normal"].item() == pytest.approx(0.0, abs=1e-6)  # equals the truth
    assert terms["normal"].item() > 0.5  # the direct normals are 90 degrees off


def test_the_seed_smoothing_rule_on_a_hand_made_3_class_pixel():
    """Logits (0, 0, ln 2): probabilities 1/4, 1/4, 1/2; target class 0, s = 0.1.
    Seed: 0.9, 0.05, 0.05, loss 0.95 ln 4 + 0.05 ln 2 = 1.95 ln 2; torch: 0.9 + 0.1/3 and
    0.1/3, loss (2 (0.9 + 0.1/3) + 2 (0.1/3) + 0.1/3) ln 2 = (1.8 + 0.5/3) ln 2."""
    logits = torch.tensor([0.0, 0.0, LN2]).view(1, 3, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    seed = transferred_seg_loss("cross", logits, target, target, 0.1, rule="seed")
    torch_rule = transferred_seg_loss("cross", logits, target, target, 0.1, rule="torch")
    assert seed.item() == pytest.approx(1.95 * LN2)
    assert torch_rule.item() == pytest.approx((1.8 + 0.5 / 3) * LN2)
    # the KL divergence subtracts the smoothed target's entropy
    kl = transferred_seg_loss("kl", logits, target, target, 0.1, rule="seed")
    entropy = -(0.9 * math.log(0.9) + 2 * 0.05 * math.log(0.05))
    assert kl.item() == pytest.approx(1.95 * LN2 - entropy)
    # ignored pixels are left out under both rules
    ignored = torch.full_like(target, IGNORE_INDEX)
    pair = torch.cat([logits, logits.flip(1)], dim=3)
    labels = torch.cat([target, ignored], dim=2)
    assert transferred_seg_loss("cross", pair, torch.zeros_like(labels), labels, 0.1,
                                rule="seed").item() == pytest.approx(1.95 * LN2)


def test_the_paper_experiments_smooth_by_the_seed_rule_and_the_default_by_torchs():
    assert compose_config([]).loss.label_smoothing_rule == "torch"
    for experiment in ("cityscapes_paper", "nyuv2_paper", "nyuv2_3task"):
        cfg = compose_config([f"experiment={experiment}"])
        assert cfg.loss.label_smoothing_rule == "seed"


@pytest.mark.parametrize("override,named", [
    ("loss.label_smoothing_rule=keras", "loss.label_smoothing_rule='keras'"),
    ("loss.consistency_target=labels", "loss.consistency_target='labels'")])
def test_unknown_rules_and_targets_are_refused_naming_the_choices(override, named):
    with pytest.raises(ConfigError, match=f"{named}: expected one of"):
        validate_config(compose_config([override]))


def test_a_checkpoint_without_the_new_loss_settings_resumes_only_under_what_it_trained_with():
    from pathlib import Path

    from omegaconf import OmegaConf

    from xtask_mt.engine.checkpoint import CheckpointError, check_training_settings

    saved = OmegaConf.to_container(compose_config(["experiment=cityscapes_paper"]), resolve=True)
    for key in ("label_smoothing_rule", "consistency_target"):
        del saved["loss"][key]
    paper = compose_config(["experiment=cityscapes_paper"])
    with pytest.raises(CheckpointError, match="loss.label_smoothing_rule: checkpoint='torch'"):
        check_training_settings(Path("old.pt"), saved, OmegaConf.to_container(paper, resolve=True))
    as_trained = compose_config(["experiment=cityscapes_paper", "loss.label_smoothing_rule=torch"])
    check_training_settings(Path("old.pt"), saved, OmegaConf.to_container(as_trained, resolve=True))
