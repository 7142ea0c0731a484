"""Metrics against brute-force computations."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.metrics import seed_metrics


def _random_batch(seed: int, n: int = 3, c: int = 4, h: int = 6, w: int = 7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g)
    labels = torch.randint(0, c, (n, h, w), generator=g)
    labels[torch.rand(n, h, w, generator=g) < 0.2] = -1
    labels[0] = -1  # an image with only ignored pixels
    depth = torch.rand(n, 1, h, w, generator=g) + 0.1
    mask = torch.rand(n, 1, h, w, generator=g) > 0.3
    pred_depth = depth + 0.3 * torch.randn(n, 1, h, w, generator=g)
    out = {"seg": logits, "depth": pred_depth,
           "seg_to_depth": pred_depth + 0.1 * torch.randn(n, 1, h, w, generator=g),
           "depth_to_seg": torch.randn(n, c, h, w, generator=g)}
    return out, {"seg": labels, "depth": depth * mask, "depth_mask": mask}


def _brute_force(batches, c):
    """Pixel loops, no confusion matrix code shared with the implementation."""
    inter, union = [0] * c, [0] * c
    correct = total = 0
    img_miou, img_acc = [], []
    abs_sum = rel_sum = sq_sum = 0.0
    deltas = [0, 0, 0]
    n_depth = 0
    for out, batch in batches:
        pred = out["seg"].argmax(1)
        for i in range(pred.shape[0]):
            pairs = [(int(p), int(t)) for p, t in zip(pred[i].flatten(), batch["seg"][i].flatten(),
                                                       strict=True) if t != -1]
            if pairs:
                ious = []
                for k in range(c):
                    u = sum(1 for p, t in pairs if p == k or t == k)
                    it = sum(1 for p, t in pairs if p == k and t == k)
                    inter[k] += it
                    union[k] += u
                    if u:
                        ious.append(it / u)
                img_miou.append(sum(ious) / len(ious))
                img_acc.append(sum(p == t for p, t in pairs) / len(pairs))
                correct += sum(p == t for p, t in pairs)
                total += len(pairs)
        for p, t, m in zip(out["depth"].flatten().tolist(), batch["depth"].flatten().tolist(),
                           batch["depth_mask"].flatten().tolist(), strict=True):
            if not m:
                continue
            abs_sum += abs(p - t)
            rel_sum += abs(p - t) / t
            sq_sum += (p - t) ** 2
            ratio = max(max(p, 1e-6) / t, t / max(p, 1e-6))
            for k in range(3):
                deltas[k] += ratio < 1.25 ** (k + 1)
            n_depth += 1
    present = [k for k in range(c) if union[k]]
    return {
        "miou": sum(inter[k] / union[k] for k in present) / len(present),
        "pixacc": correct / total,
        "miou_legacy": sum(img_miou) / len(img_miou),
        "pixacc_legacy": sum(img_acc) / len(img_acc),
        "abs_err": abs_sum / n_depth, "abs_rel": rel_sum / n_depth,
        "rmse": math.sqrt(sq_sum / n_depth),
        "delta1": deltas[0] / n_depth, "delta2": deltas[1] / n_depth,
        "delta3": deltas[2] / n_depth,
    }


def test_metrics_match_brute_force_over_several_batches():
    batches = [_random_batch(s) for s in range(3)]
    metrics = seed_metrics(4)
    for out, batch in batches:
        metrics.update(out, batch)
    got = metrics.compute()
    expected = _brute_force(batches, 4)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_dataset_miou_differs_from_mean_of_batch_mious():
    """The standard figure pools the confusion matrix; averaging per batch would differ."""
    batches = [_random_batch(s) for s in range(3)]
    pooled = seed_metrics(4)
    per_batch = []
    for out, batch in batches:
        pooled.update(out, batch)
        single = seed_metrics(4)
        single.update(out, batch)
        per_batch.append(single.compute()["miou"])
    assert pooled.compute()["miou"] != pytest.approx(sum(per_batch) / len(per_batch), abs=1e-6)


def test_perfect_prediction_scores_one_and_zero_error():
    out, batch = _random_batch(7)
    labels = batch["seg"].clamp(min=0)
    out["seg"] = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    out["depth"] = batch["depth"].clone()
    m = seed_metrics(4)
    m.update(out, batch)
    r = m.compute()
    assert r["miou"] == 1.0 and r["pixacc"] == 1.0 and r["miou_legacy"] == 1.0
    assert r["abs_err"] == 0.0 and r["delta1"] == 1.0


def test_only_ignored_pixels_give_no_segmentation_figures():
    out, batch = _random_batch(8)
    batch["seg"][:] = -1
    m = seed_metrics(4)
    m.update(out, batch)
    r = m.compute()
    assert "miou" not in r and "miou_legacy" not in r
    assert "abs_err" in r


def test_consistency_figures():
    out, batch = _random_batch(9)
    out["depth_to_seg"] = out["seg"].clone()
    m = seed_metrics(4)
    m.update(out, batch)
    r = m.compute()
    assert r["consistency_depth_to_seg"] == 1.0
    mask = batch["depth_mask"]
    expected = (out["seg_to_depth"] - out["depth"]).abs()[mask].mean().item()
    assert r["consistency_seg_to_depth"] == pytest.approx(expected, rel=1e-6)


def test_per_class_iou_marks_absent_classes_nan():
    out, batch = _random_batch(10, c=5)
    out["seg"][:, 4] = -1e9  # class 4 never predicted
    batch["seg"][batch["seg"] == 4] = 0  # nor present
    m = seed_metrics(5)
    m.update(out, batch)
    ious = m.tasks["seg"].per_class_iou()
    assert math.isnan(ious[4]) and all(not math.isnan(v) for v in ious[:4])
