"""Training-batch throughput of the data pipeline: DataLoader workers (dataset.device_cache=
false) versus batches made from the split held on the device (true).

Writes Cityscapes-layout frames (twice the training resolution) to a temporary folder,
prepares them once, then takes every augmented training batch of whole epochs (seeded as the
trainer seeds them) through each pipeline in turn, alternating, and prints images/s per
round as JSON.

    python benchmarks/data_device_cache.py --frames 64 --rounds 2 dataset.height=128 \
        dataset.width=256 dataset.batch_size=8 trainer.device=cpu
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from common import emit, machine, parse, sync
from data_throughput import write_frame
from omegaconf import DictConfig

from xtask_mt.config.build import build_dataset, build_loader, cache_on_device, resolve_device
from xtask_mt.sample import to_device


def images_per_second(loader, device: torch.device, seconds: float) -> float:
    """Whole epochs of `loader` (after one untimed epoch, which starts any workers) until
    `seconds` have passed; each batch is on `device` when it counts."""
    def epoch(index: int) -> int:
        np.random.seed(index)
        loader.sampler.set_epoch(index)
        count = 0
        for batch in loader:
            count += len(to_device(batch, device)["image"])
        sync(device)
        return count

    epoch(0)
    images, start, index = 0, time.perf_counter(), 1
    while time.perf_counter() - start < seconds:
        images += epoch(index)
        index += 1
    return images / (time.perf_counter() - start)


def pipelines(cfg: DictConfig, device: torch.device) -> dict[str, object]:
    """The loaders compared, by name: DataLoader with 0 and 2 workers, and the device cache."""
    dataset = build_dataset(cfg, "train")
    loaders: dict[str, object] = {}
    for workers in (0, 2):
        cfg.dataset.num_workers = workers
        loaders[f"device_cache=false num_workers={workers}"] = build_loader(
            cfg, dataset, True, pin_memory=device.type == "cuda")
    cfg.dataset.device_cache = True
    (loaders[f"device_cache=true device={device}"],) = cache_on_device(
        cfg, device, build_loader(cfg, dataset, True))
    return loaders


def main() -> None:
    args, cfg = parse(__doc__.splitlines()[0], [*sys.argv[1:], "dataset=cityscapes"],
                      frames=(int, 64, "frames written and prepared"),
                      rounds=(int, 2, "times each pipeline is measured, alternating"),
                      seconds=(float, 3.0, "minimum timed seconds per measurement"))
    device = resolve_device(str(cfg.trainer.device))
    cv2.setNumThreads(1)  # as in a DataLoader worker
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cityscapes"
        rng = np.random.default_rng(0)
        d = cfg.dataset
        for i in range(args.frames):
            write_frame(root, i, 2 * int(d.height), 2 * int(d.width), rng)
        cfg.dataset.root = str(root)
        loaders = pipelines(cfg, device)
        rates: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(args.rounds):
            for name, loader in loaders.items():
                rates[name].append(round(images_per_second(loader, device, args.seconds), 1))
        emit({"images_per_s": rates, "frames": args.frames, "batch_size": int(d.batch_size),
              "size": f"{d.height}x{d.width}", "scales": list(d.augment.scales),
              "machine": machine(device)})


if __name__ == "__main__":
    main()
