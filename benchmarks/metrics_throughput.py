"""Milliseconds per validation batch of the metric update, checked against brute force,
beside the model's forward pass on the same batch.

    python benchmarks/metrics_throughput.py dataset.height=128 dataset.width=256

Random predictions and targets of the config's batch size, image size and class count
(with ignored labels, invalid depth and normals) go through the config's metric
accumulators (model.tasks); the segmentation and depth figures they compute are compared with
a plain per-image, per-class computation. The predictions are in the memory layout the
config's model gives (channels-last with trainer.channels_last=true, and with auto, the
default, on a GPU or an AVX-512 CPU). `--forward-passes N` also times N forward passes of the
config's model in evaluation mode, to set the update against. Prints JSON.
"""

from __future__ import annotations

import numpy as np
import torch
from common import emit, machine, median, parse, timed

from xtask_mt.config.build import (
    build_metrics,
    build_model,
    resolve_device,
    transfer_edges,
)
from xtask_mt.metrics import DELTA_THRESHOLDS
from xtask_mt.runtime.host_memory import configure_host_memory
from xtask_mt.runtime.precision import StepOptions, resolve_channels_last
from xtask_mt.sample import IGNORE_INDEX


def random_batch(n: int, c: int, h: int, w: int, gen: torch.Generator, device: torch.device,
                 channels_last: bool = False, edges: list[tuple[str, str]] = ()
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs of every task and of the seed's two edges plus `edges`, and their targets."""
    seg = torch.randint(0, c, (n, h, w), generator=gen)
    seg[torch.rand(n, h, w, generator=gen) < 0.1] = IGNORE_INDEX
    depth = torch.rand(n, 1, h, w, generator=gen) + 0.05
    mask = torch.rand(n, 1, h, w, generator=gen) > 0.1
    batch = {"seg": seg, "depth": depth * mask, "depth_mask": mask}
    out = {"seg": torch.randn(n, c, h, w, generator=gen),
           "depth": depth + 0.1 * torch.randn(n, 1, h, w, generator=gen),
           "seg_to_depth": torch.rand(n, 1, h, w, generator=gen),
           "depth_to_seg": torch.randn(n, c, h, w, generator=gen)}
    unit = lambda x: torch.nn.functional.normalize(x, dim=1)  # noqa: E731
    normal = unit(torch.randn(n, 3, h, w, generator=gen))
    batch["normal"] = normal * (torch.rand(n, 1, h, w, generator=gen) > 0.1)
    out["normal"] = unit(normal + 0.3 * torch.randn(n, 3, h, w, generator=gen))
    for source, target in edges:
        out.setdefault(f"{source}_to_{target}", torch.randn_like(out[target]))
    if channels_last:  # the layout a channels-last model emits its outputs in
        out = {k: v.contiguous(memory_format=torch.channels_last) for k, v in out.items()}
    move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    return move(out), move(batch)


def brute_force(batches: list[tuple[dict, dict]], c: int) -> dict[str, float]:
    """The figures from loops over images and classes in numpy float64."""
    conf = np.zeros((c, c), np.int64)
    image_mious, image_accs = [], []
    err, rel, sq, deltas, count = 0.0, 0.0, 0.0, np.zeros(3), 0
    t_abs, agree, labelled = 0.0, 0, 0
    for out, batch in batches:
        pred = out["seg"].argmax(1).cpu().numpy()
        target = batch["seg"].cpu().numpy()
        for p, t in zip(pred, target, strict=True):
            valid = t != IGNORE_INDEX
            ious = []
            for k in range(c):
                for j in range(c):
                    conf[k, j] += np.sum((t == k) & (p == j) & valid)
                inter = np.sum((t == k) & (p == k) & valid)
                union = np.sum(((t == k) | (p == k)) & valid)
                if union > 0:
                    ious.append(inter / union)
            if valid.any():
                image_mious.append(np.mean(ious))
                image_accs.append(np.sum((p == t) & valid) / valid.sum())
        m = batch["depth_mask"].cpu().numpy()
        p = out["depth"].cpu().double().numpy()[m]
        t = batch["depth"].cpu().double().numpy()[m]
        e = np.abs(p - t)
        err, rel, sq, count = err + e.sum(), rel + (e / t).sum(), sq + (e**2).sum(), count + e.size
        ratio = np.maximum(np.maximum(p, 1e-6) / t, t / np.maximum(p, 1e-6))
        deltas += [np.sum(ratio < th) for th in DELTA_THRESHOLDS]
        t_abs += np.abs(out["seg_to_depth"].cpu().double().numpy()[m] - p).sum()
        valid = target != IGNORE_INDEX
        agree += np.sum((out["depth_to_seg"].argmax(1).cpu().numpy() == pred) & valid)
        labelled += valid.sum()
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    return {"miou": float(np.mean(tp[present] / union[present])),
            "pixacc": float(tp.sum() / conf.sum()),
            "miou_legacy": float(np.mean(image_mious)), "pixacc_legacy": float(np.mean(image_accs)),
            "abs_err": err / count, "abs_rel": rel / count, "rmse": float(np.sqrt(sq / count)),
            **{f"delta{k + 1}": float(deltas[k] / count) for k in range(3)},
            "consistency_seg_to_depth": t_abs / count,
            "consistency_depth_to_seg": agree / labelled}


@torch.no_grad()
def forward_ms(cfg, c: int, device: torch.device, passes: int,
               channels_last: bool) -> dict[str, float]:
    """Median ms of the config's model's forward pass (evaluation mode) on one batch."""
    if passes < 1:
        return {}
    options = StepOptions(device, channels_last=channels_last)
    model = build_model(cfg, c).to(device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    d = cfg.dataset
    image = options.image(torch.randn(int(d.batch_size), 3, int(d.height), int(d.width),
                                      device=device))
    model(image)  # one-time allocations
    times = [timed(lambda: model(image), device)[1] for _ in range(passes)]
    return {"forward_ms_median": 1000 * median(times)}


def main() -> None:
    args, cfg = parse(__doc__.splitlines()[0], batches=(int, 50, "timed batches"),
                      check_batches=(int, 3, "batches compared with brute force"),
                      forward_passes=(int, 0, "forward passes of the model timed beside"))
    device = resolve_device(str(cfg.trainer.device))
    configure_host_memory(device, cfg.trainer)  # as the training and evaluation processes do
    channels_last = resolve_channels_last(cfg.trainer.channels_last, device)  # true|false|auto
    d = cfg.dataset
    n, c, h, w = int(d.batch_size), int(d.num_classes), int(d.height), int(d.width)
    gen = torch.Generator().manual_seed(0)
    data = [random_batch(n, c, h, w, gen, device, channels_last,
                         transfer_edges(cfg)) for _ in range(max(args.check_batches, 1))]

    metrics = build_metrics(cfg, c, device)
    for out, batch in data:
        metrics.update(out, batch)
    fast = metrics.compute()
    slow = brute_force(data[:args.check_batches], c)
    differences = {k: abs(fast[k] - v) for k, v in slow.items() if k in fast}

    metrics = build_metrics(cfg, c, device)
    times = []
    for i in range(args.batches + 1):
        out, batch = data[i % len(data)]
        _, seconds = timed(lambda out=out, batch=batch: metrics.update(out, batch), device)
        if i:  # the first call pays one-time allocations
            times.append(seconds)
    emit({"benchmark": "metrics_throughput", "overrides": args.overrides,
          "batch_size": n, "image_size": [h, w], "num_classes": c,
          "tasks": list(cfg.model.tasks),
          "channels_last": channels_last,
          "update_ms_median": 1000 * median(times), "update_ms_min": 1000 * min(times),
          **forward_ms(cfg, c, device, args.forward_passes, channels_last),
          "batches": args.batches, "max_abs_difference_vs_brute_force": max(differences.values()),
          "matches_brute_force": all(v < 1e-9 for v in differences.values()),
          "machine": machine(device)})


if __name__ == "__main__":
    main()
