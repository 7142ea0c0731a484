"""The fused CPU metric kernels agree with the tensor-op update in the cases loops miss:
NaN scores, ties, ratios on a delta threshold, bfloat16 outputs, bad labels, threads."""

from __future__ import annotations

import numba
import pytest
import torch

from xtask_mt.data.sample import IGNORE_INDEX
from xtask_mt.metrics import MultiTaskMetrics


def _batch(seed: int, n: int = 2, c: int = 5, h: int = 19, w: int = 7):
    gen = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, c, (n, h, w), generator=gen)
    seg[torch.rand(n, h, w, generator=gen) < 0.2] = IGNORE_INDEX
    mask = torch.rand(n, 1, h, w, generator=gen) > 0.2
    out = {"seg": torch.randn(n, c, h, w, generator=gen),
           "tseg": torch.randn(n, c, h, w, generator=gen),
           "depth": torch.rand(n, 1, h, w, generator=gen) + 0.05,
           "tdepth": torch.rand(n, 1, h, w, generator=gen)}
    batch = {"seg": seg, "depth": (torch.rand(n, 1, h, w, generator=gen) + 0.1) * mask,
             "depth_mask": mask}
    return out, batch


def _both(out, batch, c: int = 5) -> tuple[MultiTaskMetrics, MultiTaskMetrics]:
    fused, tensor = MultiTaskMetrics(c, fused=True), MultiTaskMetrics(c, fused=False)
    fused.update(out, batch)
    tensor.update(out, batch)
    return fused, tensor


def _assert_same_sums(fused: MultiTaskMetrics, tensor: MultiTaskMetrics) -> None:
    for a, b in zip(fused.state_tensors(), tensor.state_tensors(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("channels_last", [False, True])
def test_nan_scores_and_ties_count_as_the_tensor_ops_do(channels_last):
    out, batch = _batch(0)
    out["seg"][0, 2, 3, 4] = float("nan")  # class map: C-1
    out["seg"][1, :, 5, 1] = 0.5  # every class tied: class 0
    out["tseg"][0, :, 6, 2] = 1.0  # tied transferred scores count as agreement
    out["tseg"][1, 3, 7, 3] = float("nan")  # NaN transferred scores do not
    if channels_last:
        out = {k: v.contiguous(memory_format=torch.channels_last) for k, v in out.items()}
    fused, tensor = _both(out, batch)
    _assert_same_sums(fused, tensor)
    assert fused.consistency[2] < fused.consistency[3]


def test_delta_counts_are_exact_on_the_thresholds():
    out, batch = _batch(1)
    target = batch["depth"]
    batch["depth_mask"][:] = True
    target[:] = 1.0
    # ratios exactly at, just under and just over 1.25, 1.25**2 and 1.25**3
    for k, ratio in enumerate((1.25, 1.5625, 1.953125)):
        exact = torch.tensor(ratio, dtype=torch.float32)
        out["depth"][0, 0, 3 * k] = exact
        out["depth"][0, 0, 3 * k + 1] = torch.nextafter(exact, torch.tensor(0.0))
        out["depth"][0, 0, 3 * k + 2] = torch.nextafter(exact, torch.tensor(9.0))
    fused, tensor = _both(out, batch)
    _assert_same_sums(fused, tensor)
    p, t = out["depth"].double(), target.double()
    ratio = torch.maximum(p / t, t / p)
    for k, threshold in enumerate((1.25, 1.5625, 1.953125)):
        assert fused.depth[3 + k] == (ratio < threshold).sum()


def test_bfloat16_outputs_give_the_figures_of_their_float32_values():
    out, batch = _batch(2)
    low = {k: v.bfloat16() for k, v in out.items()}
    fused = MultiTaskMetrics(5, fused=True)
    fused.update(low, batch)
    reference = MultiTaskMetrics(5, fused=False)
    reference.update({k: v.float() for k, v in low.items()}, batch)
    _assert_same_sums(fused, reference)


def test_a_label_outside_the_classes_is_reported_not_counted():
    out, batch = _batch(3)
    batch["seg"][1, 2, 3] = 5  # 5 classes: 0..4
    with pytest.raises(ValueError, match=r"1 segmentation label\(s\) outside 0\.\.4"):
        MultiTaskMetrics(5, fused=True).update(out, batch)


@pytest.mark.parametrize("channels_last", [False, True])
def test_sums_do_not_depend_on_the_thread_count(channels_last):
    out, batch = _batch(4, n=3, h=70, w=33)  # several blocks of rows per image
    if channels_last:
        out = {k: v.contiguous(memory_format=torch.channels_last) for k, v in out.items()}
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            torch.set_num_threads(threads)
            metrics = MultiTaskMetrics(5, fused=True)
            metrics.update(out, batch)
            results.append(metrics.state_tensors())
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_fused_kernels_refuse_a_gpu_device():
    with pytest.raises(ValueError, match="CPU only"):
        MultiTaskMetrics(5, device="cuda", fused=True)


@pytest.mark.parametrize("keys", [("seg",), ("seg", "tseg"), ("depth",), ("depth", "tdepth")])
def test_outputs_of_one_task_give_the_sums_of_the_tensor_ops(keys):
    out, batch = _batch(5)
    fused, tensor = _both({k: out[k] for k in keys}, batch)
    _assert_same_sums(fused, tensor)
    assert (fused.confusion.sum() > 0) == ("seg" in keys)
    assert (fused.depth[6] > 0) == ("depth" in keys)
