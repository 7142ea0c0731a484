"""The vectorised metric update gives what per-image, per-class loops give."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.metrics import seed_metrics

from xtask_mt.metrics import DELTA_THRESHOLDS, class_map
from xtask_mt.sample import IGNORE_INDEX


def _random(gen: torch.Generator, n: int = 3, c: int = 4, h: int = 6, w: int = 5):
    seg = torch.randint(0, c, (n, h, w), generator=gen)
    seg[torch.rand(n, h, w, generator=gen) < 0.2] = IGNORE_INDEX
    seg[0] = IGNORE_INDEX  # an image without labels counts in no per-image figure
    mask = torch.rand(n, 1, h, w, generator=gen) > 0.2
    depth = (torch.rand(n, 1, h, w, generator=gen) + 0.1) * mask
    out = {"seg": torch.randn(n, c, h, w, generator=gen), "depth_to_seg": torch.randn(n, c, h, w),
           "depth": torch.rand(n, 1, h, w, generator=gen), "seg_to_depth": torch.rand(n, 1, h, w)}
    return out, {"seg": seg, "depth": depth, "depth_mask": mask}


def _loops(batches, c: int) -> dict[str, float]:
    conf = [[0] * c for _ in range(c)]
    mious, accs = [], []
    err = rel = sq = count = 0.0
    deltas = [0, 0, 0]
    t_abs = t_count = agree = labelled = 0.0
    for out, batch in batches:
        pred = out["seg"].argmax(dim=1)
        for p, t in zip(pred.tolist(), batch["seg"].tolist(), strict=True):
            pairs = [(a, b) for rt, rp in zip(t, p, strict=True)
                     for a, b in zip(rt, rp, strict=True) if a != IGNORE_INDEX]
            for a, b in pairs:
                conf[a][b] += 1
            if pairs:
                ious = []
                for k in range(c):
                    inter = sum(a == k and b == k for a, b in pairs)
                    union = sum(a == k or b == k for a, b in pairs)
                    if union:
                        ious.append(inter / union)
                mious.append(sum(ious) / len(ious))
                accs.append(sum(a == b for a, b in pairs) / len(pairs))
        for p, t, m in zip(out["depth"].flatten().tolist(), batch["depth"].flatten().tolist(),
                           batch["depth_mask"].flatten().tolist(), strict=True):
            if m:
                e = abs(p - t)
                err, rel, sq, count = err + e, rel + e / t, sq + e * e, count + 1
                ratio = max(p / t, t / p)
                deltas = [d + (ratio < th) for d, th in zip(deltas, DELTA_THRESHOLDS, strict=True)]
        for td, d, m in zip(out["seg_to_depth"].flatten().tolist(), out["depth"].flatten().tolist(),
                            batch["depth_mask"].flatten().tolist(), strict=True):
            if m:
                t_abs, t_count = t_abs + abs(td - d), t_count + 1
        transferred = out["depth_to_seg"].argmax(dim=1).flatten().tolist()
        for ts, s, t in zip(transferred, pred.flatten().tolist(),
                            batch["seg"].flatten().tolist(), strict=True):
            if t != IGNORE_INDEX:
                agree, labelled = agree + (ts == s), labelled + 1
    tp = [conf[k][k] for k in range(c)]
    unions = [sum(conf[k]) + sum(row[k] for row in conf) - tp[k] for k in range(c)]
    present = [k for k in range(c) if unions[k]]
    return {"miou": sum(tp[k] / unions[k] for k in present) / len(present),
            "pixacc": sum(tp) / sum(map(sum, conf)),
            "miou_legacy": sum(mious) / len(mious), "pixacc_legacy": sum(accs) / len(accs),
            "abs_err": err / count, "abs_rel": rel / count, "rmse": math.sqrt(sq / count),
            **{f"delta{k + 1}": deltas[k] / count for k in range(3)},
            "consistency_seg_to_depth": t_abs / t_count,
            "consistency_depth_to_seg": agree / labelled}


@pytest.mark.parametrize("channels_last", [False, True])
def test_metric_update_equals_per_image_loops(channels_last):
    gen = torch.Generator().manual_seed(0)
    batches = [_random(gen) for _ in range(3)]
    if channels_last:  # the layout a channels-last model gives
        batches = [({k: v.contiguous(memory_format=torch.channels_last) for k, v in out.items()},
                    batch) for out, batch in batches]
    metrics = seed_metrics(4)
    for out, batch in batches:
        metrics.update(out, batch)
    fast = metrics.compute()
    for key, value in _loops(batches, 4).items():
        assert math.isclose(fast[key], value, rel_tol=1e-9, abs_tol=1e-12), key


def test_class_map_equals_argmax_including_ties():
    x = torch.randn(2, 7, 9, 11)
    assert torch.equal(class_map(x), x.argmax(dim=1))
    tied = torch.randint(0, 3, (2, 7, 9, 11)).float()  # many equal maxima per pixel
    assert torch.equal(class_map(tied), tied.argmax(dim=1))
    assert torch.equal(class_map(tied, torch.int16), tied.argmax(dim=1).to(torch.int16))
    nhwc = tied.contiguous(memory_format=torch.channels_last)
    assert torch.equal(class_map(nhwc), tied.argmax(dim=1))


def test_class_map_stays_in_range_on_nan():
    x = torch.randn(1, 5, 2, 2)
    x[0, 2, 0, 0] = float("nan")
    ids = class_map(x)
    assert ids[0, 0, 0] == 4
    assert torch.equal(ids[0].flatten()[1:], x.argmax(dim=1)[0].flatten()[1:])
