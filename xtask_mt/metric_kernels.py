"""Fused CPU passes for the metric update, compiled with numba.

On CPU the eager tensor form of the update costs about 30 passes over the batch, each paying
for its own temporaries; these kernels read every prediction once and keep per-pixel work in
registers. They give the same sums as `metrics.torch_seg_sums` and `torch_depth_sums`
(checked in the tests, and by benchmarks/metrics_throughput.py against a brute-force loop);
GPUs keep that tensor form. Work is split into blocks of rows of one image, each block
writing its own slot of the output, so the sums do not depend on the number of threads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numba
import numpy as np
import torch
from numba import njit, prange

from xtask_mt.data.sample import IGNORE_INDEX

_ROWS_PER_BLOCK = 16


@njit(cache=True)
def _task_rows(task, h, rows):
    """Image and row range of a task: tasks take blocks of `rows` rows, image by image."""
    blocks = (h + rows - 1) // rows
    y0 = (task % blocks) * rows
    return task // blocks, y0, min(y0 + rows, h)


@njit(parallel=True, cache=True)
def _seg_planar(seg, target, tseg, use_tseg, rows, conf, agree, bad):
    """(N, C, H, W) scores: each row is reduced over the classes one class plane at a time,
    which the compiler vectorises along the row."""
    n, c, h, w = seg.shape
    for task in prange(n * -(-h // rows)):
        i, y0, y1 = _task_rows(task, h, rows)
        best = np.empty(w, seg.dtype)
        top = np.empty(w, tseg.dtype)
        ids = np.empty(w, np.int64)
        nan = np.empty(w, np.bool_)
        ok = np.empty(w, np.bool_)
        hist = np.zeros(c * c, np.int64)
        agreed = 0
        wrong = 0
        for y in range(y0, y1):
            for x in range(w):
                v = seg[i, 0, y, x]
                best[x] = v
                ids[x] = 0
                nan[x] = v != v
            for j in range(1, c):
                for x in range(w):
                    v = seg[i, j, y, x]
                    higher = v > best[x]
                    best[x] = v if higher else best[x]
                    ids[x] = j if higher else ids[x]
                    nan[x] = nan[x] | (v != v)
            for x in range(w):
                k = c - 1 if nan[x] else ids[x]  # as class_map: NaN scores give class C-1
                ids[x] = k
                t = target[i, y, x]
                labelled = (t >= 0) & (t < c)
                wrong += (not labelled) & (t != IGNORE_INDEX)
                if labelled:
                    hist[t * c + k] += 1
                ok[x] = labelled
            if use_tseg:
                for x in range(w):
                    a = tseg[i, ids[x], y, x]
                    top[x] = a
                    ok[x] = ok[x] & (a == a)
                for j in range(c):
                    for x in range(w):
                        ok[x] = ok[x] & (tseg[i, j, y, x] <= top[x])  # False on NaN
                for x in range(w):
                    agreed += ok[x]
        conf[task] = hist.reshape(c, c)
        agree[task] = agreed
        bad[task] = wrong


@functools.cache
def _interleaved_kernel(c: int) -> Callable[..., None]:
    """The kernel for (N, H, W, C) scores with `c` classes, as a channels-last model gives
    them. With the class count fixed at compile time, the compiler vectorises the per-pixel
    class loops across pixels (strided loads of `c` interleaved planes), about 2.5x faster
    than the same loops over a run-time count. Compiled once per class count and cached."""

    @njit(parallel=True, cache=True)
    def kernel(seg, target, tseg, use_tseg, rows, conf, agree, bad):
        n, h, w, _ = seg.shape
        for task in prange(n * -(-h // rows)):
            i, y0, y1 = _task_rows(task, h, rows)
            ids = np.empty(w, np.int64)
            hist = np.zeros(c * c + 1, np.int64)  # the last bin takes unlabelled pixels
            agreed = 0
            wrong = 0
            for y in range(y0, y1):
                scores = seg[i, y].ravel()
                for x in range(w):
                    best = scores[x * c]
                    k = 0
                    nan = best != best
                    for j in range(1, c):
                        v = scores[x * c + j]
                        higher = v > best
                        best = v if higher else best
                        k = j if higher else k
                        nan = nan | (v != v)
                    ids[x] = c - 1 if nan else k  # as class_map: NaN scores give class C-1
                labels = target[i, y]
                for x in range(w):
                    t = labels[x]
                    labelled = (t >= 0) & (t < c)
                    wrong += (not labelled) & (t != IGNORE_INDEX)
                    hist[t * c + ids[x] if labelled else c * c] += 1
                if use_tseg:
                    transferred = tseg[i, y].ravel()
                    for x in range(w):
                        t = labels[x]
                        top = transferred[x * c + ids[x]]
                        same = (t >= 0) & (t < c) & (top == top)
                        for j in range(c):
                            same = same & (transferred[x * c + j] <= top)  # False on NaN
                        agreed += same
            conf[task] = hist[:c * c].reshape(c, c)
            agree[task] = agreed
            bad[task] = wrong

    return kernel


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _depth(pred, target, mask, tdepth, use_tdepth, rows, eps, thresholds, sums):
    """(N, H, W) maps; float64 per pixel. Invalid pixels count through selects, not a
    branch, and the sums may be reassociated, so the loop vectorises (NaN still propagates).
    A ratio is compared by multiplying, not dividing: for float32 depths the products are
    exact in float64, so each delta count is exact."""
    n, h, w = pred.shape
    t1, t2, t3 = thresholds[0], thresholds[1], thresholds[2]
    for task in prange(n * -(-h // rows)):
        i, y0, y1 = _task_rows(task, h, rows)
        err = rel = sq = transferred = 0.0
        d1 = d2 = d3 = count = 0
        for y in range(y0, y1):
            for x in range(w):
                valid = mask[i, y, x]
                p = np.float64(pred[i, y, x])
                t = np.float64(target[i, y, x]) if valid else 1.0
                e = abs(p - t) if valid else 0.0
                err += e
                rel += e / t
                sq += e * e
                floor = max(p, eps)
                d1 += valid & (floor < t1 * t) & (t < t1 * floor)
                d2 += valid & (floor < t2 * t) & (t < t2 * floor)
                d3 += valid & (floor < t3 * t) & (t < t3 * floor)
                count += valid
                if use_tdepth:
                    transferred += abs(np.float64(tdepth[i, y, x]) - p) if valid else 0.0
        sums[task, 0] = err
        sums[task, 1] = rel
        sums[task, 2] = sq
        sums[task, 3] = d1
        sums[task, 4] = d2
        sums[task, 5] = d3
        sums[task, 6] = count
        sums[task, 7] = transferred


def _use_torch_threads() -> None:
    """Run on as many threads as torch does (numba starts one per core by default)."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _floats(x: torch.Tensor) -> torch.Tensor:
    """Float values (scores or depths) as numba takes them (no bfloat16 or float16 there)."""
    x = x.detach()
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _image_blocks(n: int, h: int) -> int:
    """Tasks of a batch: one per block of rows of each image."""
    return n * -(-h // _ROWS_PER_BLOCK)


def seg_sums(seg: torch.Tensor, target: torch.Tensor, tseg: torch.Tensor | None
             ) -> tuple[torch.Tensor, int]:
    """Per-image confusion matrices (N, C, C) and, with `tseg`, the labelled pixels whose
    direct class scores highest (a tie counts) in the transferred logits.

    Raises ValueError for a label outside 0..C-1 that is not the ignore index: counting it
    would write outside the matrix.
    """
    _use_torch_threads()
    n, c, h, _ = seg.shape
    planar = seg.stride(1) != 1 or c == 1
    layout = (lambda x: _floats(x).contiguous()) if planar else \
        (lambda x: _floats(x).permute(0, 2, 3, 1).contiguous())
    scores = layout(seg).numpy()
    transferred = layout(tseg).numpy() if tseg is not None else scores
    tasks = _image_blocks(n, h)
    conf = np.empty((tasks, c, c), np.int64)
    agree = np.empty(tasks, np.int64)
    bad = np.empty(tasks, np.int64)
    kernel = _seg_planar if planar else _interleaved_kernel(c)
    kernel(scores, target.detach().long().contiguous().numpy(), transferred, tseg is not None,
           _ROWS_PER_BLOCK, conf, agree, bad)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} segmentation label(s) outside 0..{c - 1} (and not the ignore "
            f"index {IGNORE_INDEX}) for a model with {c} classes: check dataset.num_classes "
            "and the label mapping of the dataset.")
    per_image = torch.from_numpy(conf.reshape(n, -1, c, c).sum(axis=1))
    return per_image, int(agree.sum())


def depth_sums(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               tdepth: torch.Tensor | None, eps: float,
               thresholds: tuple[float, float, float]) -> torch.Tensor:
    """[abs, abs rel, squared, delta1-3, valid pixels, |tdepth - depth|] summed over the valid
    pixels of (N, 1, H, W) maps."""
    _use_torch_threads()
    n, _, h, w = pred.shape
    flat = lambda x: x.detach().reshape(n, h, w).contiguous()  # noqa: E731
    p = flat(_floats(pred)).numpy()
    t = flat(_floats(target)).numpy()
    sums = np.empty((_image_blocks(n, h), 8), np.float64)
    _depth(p, t, flat(mask.bool()).numpy(), flat(_floats(tdepth)).numpy() if tdepth is not None
           else p, tdepth is not None, _ROWS_PER_BLOCK, eps, np.array(thresholds), sums)
    return torch.from_numpy(sums.sum(axis=0))
