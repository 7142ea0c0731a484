"""KD4MTL's distillation loss: known answers, adaptors, and how it joins the task losses."""

from __future__ import annotations

import pytest
import torch

from xtask_mt.losses import LossOutput
from xtask_mt.losses.distillation import FeatureDistillation, feature_distance, unit_channels


def test_unit_channels_scales_each_pixel_vector_to_length_one():
    x = torch.tensor([[[[3.0]], [[4.0]]]])  # one pixel, vector (3, 4)
    torch.testing.assert_close(unit_channels(x).flatten(), torch.tensor([0.6, 0.8]),
                               atol=1e-6, rtol=0)


def test_feature_distance_is_the_mean_squared_distance_of_unit_vectors():
    """Pixel 1: (1, 0) vs (0, 2) -> unit vectors 90 degrees apart, distance^2 = 2.
    Pixel 2: (2, 0) vs (5, 0) -> the same unit vector, distance 0. Mean: 1."""
    student = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    teacher = torch.tensor([[[[0.0, 5.0]], [[2.0, 0.0]]]])
    assert feature_distance(student, teacher).item() == pytest.approx(1.0, abs=1e-5)
    assert feature_distance(student * 7, student).item() == pytest.approx(0.0, abs=1e-6)


def test_adaptors_map_the_student_channels_to_each_teachers_and_add_weighted_losses():
    torch.manual_seed(0)
    kd = FeatureDistillation(student_channels=(8, 16), teacher_channels={"seg": (4, 32),
                             "depth": (4, 12)}, levels=[-1], weight=0.5)
    assert kd.adaptors["seg"][0].weight.shape == (32, 16, 1, 1)
    assert kd.adaptors["depth"][0].weight.shape == (12, 16, 1, 1)
    assert kd.adaptors["seg"][0].bias is None
    student = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4, requires_grad=True)]
    teachers = {"seg": [torch.randn(2, 4, 8, 8), torch.randn(2, 32, 4, 4)],
                "depth": [torch.randn(2, 4, 8, 8), torch.randn(2, 12, 4, 4)]}
    distances = kd.distances(student, teachers)
    expected = feature_distance(kd.adaptors["seg"][0](student[1]), teachers["seg"][1])
    torch.testing.assert_close(distances["seg"], expected)
    losses = LossOutput(terms={"seg": torch.tensor(1.0), "depth": torch.tensor(2.0)},
                        tasks={"seg": torch.tensor(1.0), "depth": torch.tensor(2.0)})
    joined = kd.add_to(losses, distances)
    torch.testing.assert_close(joined.tasks["seg"], 1.0 + 0.5 * distances["seg"])
    torch.testing.assert_close(joined.tasks["depth"], 2.0 + 0.5 * distances["depth"])
    assert set(joined.terms) == {"seg", "depth", "kd_seg", "kd_depth"}
    joined.tasks["seg"].backward()
    assert student[1].grad is not None and kd.adaptors["seg"][0].weight.grad is not None
    assert kd.adaptors["depth"][0].weight.grad is None  # seg's loss does not reach it


def test_levels_of_different_resolution_are_refused_naming_kd_levels():
    kd = FeatureDistillation((8,), {"seg": (8,)}, levels=[0], weight=1.0)
    with pytest.raises(ValueError, match="kd.levels"):
        kd.distances([torch.randn(1, 8, 4, 4)], {"seg": [torch.randn(1, 8, 8, 8)]})
