"""Loss terms against hand-worked or independently computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xtask_mt.losses import (
    direct_depth_loss,
    segmentation_loss,
    ssim_loss_map,
    transferred_seg_loss,
)

PRED = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.0], [0.0, 5.0]]]])
TARGET = torch.tensor([[[[1.5, 2.0], [1.0, 0.0]]], [[[1.0, 0.0], [0.0, 1.0]]]])
MASK = torch.tensor([[[[True, True], [True, False]]], [[[True, False], [False, True]]]])


def _per_image_mean(per_pixel_fn) -> float:
    """Independent reference: loop over images and valid pixels."""
    means = []
    for n in range(PRED.shape[0]):
        vals = [per_pixel_fn(float(p), float(t)) for p, t, m in
                zip(PRED[n].flatten(), TARGET[n].flatten(), MASK[n].flatten(), strict=True) if m]
        if vals:
            means.append(sum(vals) / len(vals))
    return sum(means) / len(means)


def _smooth_l1(p: float, t: float) -> float:
    d = abs(p - t)
    return 0.5 * d * d if d < 1 else d - 0.5


@pytest.mark.parametrize("name,fn", [
    ("l1", lambda p, t: abs(p - t)),
    ("mse", lambda p, t: (p - t) ** 2),
    ("logl1", lambda p, t: math.log(1 + abs(p - t))),
    ("smoothl1", _smooth_l1),
])
def test_direct_depth_losses_match_reference(name, fn):
    got = direct_depth_loss(name, PRED, TARGET, MASK)
    assert got.item() == pytest.approx(_per_image_mean(fn), rel=1e-6)


def test_depth_l1_by_hand():
    # image 0: |1-1.5|, |2-2|, |3-1| -> mean 2.5/3; image 1: |0-1|, |5-1| -> mean 2.5
    assert direct_depth_loss("l1", PRED, TARGET, MASK).item() == pytest.approx(
        (2.5 / 3 + 2.5) / 2)


def test_depth_loss_ignores_masked_pixels_entirely():
    poisoned = PRED.clone()
    poisoned[~MASK] = 1e6
    assert direct_depth_loss("l1", poisoned, TARGET, MASK).item() == pytest.approx(
        direct_depth_loss("l1", PRED, TARGET, MASK).item())


def test_all_invalid_image_gives_finite_loss_and_gradient():
    pred = PRED.clone().requires_grad_(True)
    mask = MASK.clone()
    mask[1] = False  # image 1 has no valid pixel: it is left out, no division by zero
    loss = direct_depth_loss("l1", pred, TARGET, mask)
    assert loss.item() == pytest.approx(2.5 / 3)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    none_valid = direct_depth_loss("mse", pred, TARGET, torch.zeros_like(mask))
    assert none_valid.item() == 0.0
    none_valid.backward()


def test_ssim_of_identical_maps_is_zero_and_of_different_maps_positive():
    x = torch.rand(2, 1, 8, 8)
    assert ssim_loss_map(x, x).abs().max().item() < 1e-5
    assert ssim_loss_map(x, 1 - x).mean().item() > 0.1
    assert ssim_loss_map(x, torch.rand(2, 1, 8, 8)).max().item() <= 1.0


def test_ssim_matches_formula_on_constant_windows():
    # Constant maps a and b: sigma = 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.25, 0.75, 0.01**2
    x, y = torch.full((1, 1, 5, 5), a), torch.full((1, 1, 5, 5), b)
    expected = (1 - (2 * a * b + c1) / (a * a + b * b + c1)) / 2
    assert ssim_loss_map(x, y).mean().item() == pytest.approx(expected, rel=1e-5)


def test_transferred_seg_loss_ignores_unlabelled_pixels():
    torch.manual_seed(0)
    tseg = torch.randn(2, 4, 6, 6, requires_grad=True)
    classes = torch.randn(2, 4, 6, 6).argmax(1)
    labels = torch.randint(0, 4, (2, 6, 6))
    labels[0, :3] = -1
    for name in ("cross", "kl"):
        loss = transferred_seg_loss(name, tseg, classes, labels, label_smoothing=0.1)
        (g_t,) = torch.autograd.grad(loss, [tseg])
        assert g_t[0, :, :3].abs().sum() == 0  # ignored pixels get no gradient
        assert g_t[0, :, 3:].abs().sum() > 0


def test_transferred_cross_entropy_matches_torch_reference():
    torch.manual_seed(1)
    tseg, seg = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    labels = torch.randint(0, 5, (2, 4, 4))
    labels[1, 0] = -1
    target = seg.argmax(1).masked_fill(labels == -1, -100)
    expected = F.cross_entropy(tseg, target, label_smoothing=0.2)  # ignore_index -100
    got = transferred_seg_loss("cross", tseg, seg.argmax(1), labels, label_smoothing=0.2)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_kl_is_per_pixel_over_classes():
    """Reference: explicit loop over pixels with the class axis kept intact (NCHW)."""
    torch.manual_seed(2)
    c, eps = 3, 0.3
    tseg, seg = torch.randn(1, c, 2, 3), torch.randn(1, c, 2, 3)
    labels = torch.zeros(1, 2, 3, dtype=torch.long)
    labels[0, 1, 2] = -1
    total, count = 0.0, 0
    for i in range(2):
        for j in range(3):
            if labels[0, i, j] == -1:
                continue
            k = int(seg[0, :, i, j].argmax())
            q = torch.full((c,), eps / c)
            q[k] += 1 - eps
            p = torch.softmax(tseg[0, :, i, j], 0)
            total += float((q * (q.log() - p.log())).sum())
            count += 1
    got = transferred_seg_loss("kl", tseg, seg.argmax(1), labels, label_smoothing=eps)
    assert got.item() == pytest.approx(total / count, rel=1e-5)


def test_kl_without_smoothing_equals_cross_entropy():
    torch.manual_seed(3)
    tseg, seg = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    labels = torch.randint(0, 4, (2, 5, 5))
    kl = transferred_seg_loss("kl", tseg, seg.argmax(1), labels)
    ce = transferred_seg_loss("cross", tseg, seg.argmax(1), labels)
    assert kl.item() == pytest.approx(ce.item(), rel=1e-5)


def test_segmentation_loss_all_ignored_is_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 4, 4), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()
