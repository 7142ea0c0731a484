"""The per-task accumulators in the cases loops over tidy data miss: NaN scores, ties,
ratios on a delta threshold, bfloat16 outputs, bad labels, several edges into one task."""

from __future__ import annotations

import pytest
import torch
from helpers.metrics import seed_metrics

from xtask_mt.metrics import DepthMetrics, SegmentationMetrics
from xtask_mt.sample import IGNORE_INDEX


def _batch(seed: int, n: int = 2, c: int = 5, h: int = 19, w: int = 7):
    gen = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, c, (n, h, w), generator=gen)
    seg[torch.rand(n, h, w, generator=gen) < 0.2] = IGNORE_INDEX
    mask = torch.rand(n, 1, h, w, generator=gen) > 0.2
    out = {"seg": torch.randn(n, c, h, w, generator=gen),
           "depth_to_seg": torch.randn(n, c, h, w, generator=gen),
           "depth": torch.rand(n, 1, h, w, generator=gen) + 0.05,
           "seg_to_depth": torch.rand(n, 1, h, w, generator=gen)}
    batch = {"seg": seg, "depth": (torch.rand(n, 1, h, w, generator=gen) + 0.1) * mask,
             "depth_mask": mask}
    return out, batch


@pytest.mark.parametrize("channels_last", [False, True])
def test_nan_scores_and_ties(channels_last):
    """A NaN score gives class C-1; tied transferred maxima agree; NaN ones do not."""
    out, batch = _batch(0)
    batch["seg"][:] = 0
    out["seg"][:] = 0.0
    out["seg"][:, 0] = 1.0                      # class 0 everywhere ...
    out["seg"][0, 2, 3, 4] = float("nan")       # ... but C-1 = 4 here
    out["depth_to_seg"][:] = 0.0
    out["depth_to_seg"][:, 0] = 1.0              # agrees everywhere ...
    out["depth_to_seg"][1, :, 5, 1] = 1.0        # ... also where all classes tie ...
    out["depth_to_seg"][1, 3, 7, 3] = float("nan")  # ... but not where a score is NaN
    if channels_last:
        out = {k: v.contiguous(memory_format=torch.channels_last) for k, v in out.items()}
    metrics = seed_metrics(5)
    metrics.update(out, batch)
    seg = metrics.tasks["seg"]
    assert seg.confusion[0, 4] == 1 and seg.confusion[0, 0] == 2 * 19 * 7 - 1
    pixels = 2 * 19 * 7
    # the NaN seg pixel's class 4 scores 0 in depth_to_seg (not top): 2 pixels disagree
    assert seg.compute()["consistency_depth_to_seg"] == pytest.approx((pixels - 2) / pixels)


def test_delta_counts_are_exact_on_the_thresholds():
    out, batch = _batch(1)
    batch["depth_mask"][:] = True
    batch["depth"][:] = 1.0
    for k, ratio in enumerate((1.25, 1.5625, 1.953125)):  # at, just under and just over
        exact = torch.tensor(ratio, dtype=torch.float32)
        out["depth"][0, 0, 3 * k] = exact
        out["depth"][0, 0, 3 * k + 1] = torch.nextafter(exact, torch.tensor(0.0))
        out["depth"][0, 0, 3 * k + 2] = torch.nextafter(exact, torch.tensor(9.0))
    metrics = DepthMetrics()
    metrics.update(out["depth"], batch, {})
    p = out["depth"].double()
    ratio = torch.maximum(p, 1 / p)
    for k, threshold in enumerate((1.25, 1.5625, 1.953125)):
        assert metrics.sums[f"delta{k + 1}"] == (ratio < threshold).sum()


def test_bfloat16_outputs_give_the_figures_of_their_float32_values():
    out, batch = _batch(2)
    low = {k: v.bfloat16() for k, v in out.items()}
    a, b = seed_metrics(5), seed_metrics(5)
    a.update(low, batch)
    b.update({k: v.float() for k, v in low.items()}, batch)
    assert a.compute() == b.compute()


@pytest.mark.parametrize("label", [5, -2])
def test_a_label_outside_the_classes_is_reported_not_counted(label):
    out, batch = _batch(3)
    batch["seg"][1, 2, 3] = label  # 5 classes: 0..4, and the ignore index -1
    with pytest.raises(ValueError, match=r"1 segmentation label\(s\) outside 0\.\.4"):
        SegmentationMetrics(5).update(out["seg"], batch, {})


def test_each_edge_into_a_task_gets_its_own_consistency():
    out, batch = _batch(4)
    metrics = DepthMetrics(edges=("seg_to_depth", "normal_to_depth"))
    metrics.update(out["depth"], batch, {"seg_to_depth": out["seg_to_depth"],
                                         "normal_to_depth": out["depth"] + 0.5})
    result = metrics.compute()
    mask = batch["depth_mask"]
    expected = (out["seg_to_depth"] - out["depth"]).abs()[mask].mean().item()
    assert result["consistency_seg_to_depth"] == pytest.approx(expected, rel=1e-6)
    assert result["consistency_normal_to_depth"] == pytest.approx(0.5, rel=1e-6)
