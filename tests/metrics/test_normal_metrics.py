"""Surface normal metrics: angles, the exact median from the histogram, within-shares,
the legacy per-batch median, edges, and invalid pixels left out."""

from __future__ import annotations

import math

import pytest
import torch

from xtask_mt.metrics.normal import NormalMetrics


def _at_angles(degrees: list[float], invalid: int = 0) -> dict[str, torch.Tensor]:
    """Predictions in the x-z plane at `degrees` from targets (0, 0, 1), plus `invalid`
    pixels whose target is zero."""
    n = len(degrees) + invalid
    pred = torch.zeros(1, 3, 1, n, dtype=torch.float64)
    target = torch.zeros(1, 3, 1, n, dtype=torch.float64)
    for i, a in enumerate(degrees):
        pred[0, :, 0, i] = torch.tensor([math.sin(math.radians(a)), 0.0,
                                         math.cos(math.radians(a))])
        target[0, 2, 0, i] = 1.0
    pred[0, 2, 0, len(degrees):] = 1.0
    return {"pred": pred, "normal": target}


def test_figures_by_hand():
    metrics = NormalMetrics()
    batch = _at_angles([10.0, 20.0, 40.0, 80.0], invalid=3)
    metrics.update(batch["pred"], batch, {})
    r = metrics.compute()
    assert r["normal_mean"] == pytest.approx(37.5, abs=1e-6)
    assert r["normal_median"] == pytest.approx(20.0, abs=0.01)  # lower median of 4
    assert r["normal_within_11"] == 0.25
    assert r["normal_within_22"] == 0.5
    assert r["normal_within_30"] == 0.5


def test_median_over_batches_is_exact_to_a_hundredth_and_legacy_is_per_batch():
    gen = torch.Generator().manual_seed(0)
    degrees = (torch.rand(2, 501, generator=gen) * 90).double()
    metrics = NormalMetrics()
    for row in degrees:
        batch = _at_angles(row.tolist())
        metrics.update(batch["pred"], batch, {})
    r = metrics.compute()
    assert abs(r["normal_median"] - degrees.flatten().median().item()) <= 0.01
    legacy = (degrees[0].median() + degrees[1].median()).item() / 2
    assert r["normal_median_legacy"] == pytest.approx(legacy, abs=1e-6)


def test_an_all_invalid_batch_adds_nothing():
    metrics = NormalMetrics()
    batch = _at_angles([], invalid=4)
    metrics.update(batch["pred"], batch, {})
    assert metrics.compute() == {}
    batch = _at_angles([30.0])
    metrics.update(batch["pred"], batch, {})
    assert metrics.compute()["normal_mean"] == pytest.approx(30.0, abs=1e-6)


def test_edge_consistency_is_the_mean_angle_to_the_direct_normals():
    batch = _at_angles([0.0, 0.0])
    transferred = _at_angles([90.0, 45.0])["pred"]
    metrics = NormalMetrics(edges=("depth_to_normal",))
    metrics.update(batch["pred"], batch, {"depth_to_normal": transferred})
    assert metrics.compute()["consistency_depth_to_normal"] == pytest.approx(67.5, abs=1e-6)
