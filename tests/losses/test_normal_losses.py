"""Surface normal losses against hand-worked values; invalid (zero) targets left out."""

from __future__ import annotations

import math

import pytest
import torch

from xtask_mt.losses.normal import normal_loss
from xtask_mt.sample import valid_normals


def _maps():
    """Two valid pixels at 0 and 60 degrees from their targets, one invalid target."""
    pred = torch.zeros(1, 3, 1, 3)
    target = torch.zeros(1, 3, 1, 3)
    pred[0, :, 0, 0] = torch.tensor([0.0, 0.0, 2.0])  # not unit: the loss normalises
    target[0, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0])
    pred[0, :, 0, 1] = torch.tensor([math.sin(math.pi / 3), 0.0, math.cos(math.pi / 3)])
    target[0, :, 0, 1] = torch.tensor([0.0, 0.0, 1.0])
    pred[0, :, 0, 2] = torch.tensor([1.0, 0.0, 0.0])  # target zero: invalid
    return pred, target


def test_cosine_and_l1_by_hand():
    pred, target = _maps()
    valid = valid_normals(target)
    assert valid.tolist() == [[[True, True, False]]]
    cosine = normal_loss("cosine", pred, target, valid)
    assert cosine.item() == pytest.approx((0.0 + (1 - 0.5)) / 2, rel=1e-6)
    l1 = normal_loss("l1", pred, target, valid)
    second = math.sin(math.pi / 3) + (1 - math.cos(math.pi / 3))
    assert l1.item() == pytest.approx((0.0 + second) / 2, rel=1e-6)


def test_all_invalid_targets_give_zero_with_a_gradient():
    pred = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = normal_loss("cosine", pred, torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_unknown_name_is_refused():
    pred, target = _maps()
    with pytest.raises(ValueError, match="cosine"):
        normal_loss("angle", pred, target, valid_normals(target))
