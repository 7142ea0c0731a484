"""End-to-end training epochs of any config: seconds per epoch, images/s, validation figures.

    python benchmarks/epoch.py encoder=resnet34 dataset.height=128 dataset.width=256 \
        weighting=uncertainty trainer.epochs=1 trainer.precision=bf16-mixed

Runs the real training job (data, training steps, validation, checkpoints) into a temporary
folder, or --output-dir. Prints JSON; run it once per precision to compare final mIoU.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from common import emit, machine, parse, peak_memory_gb

from xtask_mt.config.build import resolve_device
from xtask_mt.engine.trainer import train


def main() -> None:
    args, cfg = parse(__doc__.splitlines()[0],
                      output_dir=(str, "", "keep the run here (default: a temporary folder)"))
    logging.basicConfig(level=logging.WARNING)
    cfg.trainer.progress_bar = False
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = train(cfg, Path(args.output_dir or tmp))
        wall = time.perf_counter() - start
    epoch_times = [e["epoch_time_s"] for e in summary["history"]]
    train_images = int(cfg.dataset.train_size) // int(cfg.dataset.batch_size) * int(
        cfg.dataset.batch_size)
    device = resolve_device(str(cfg.trainer.device))
    emit({"benchmark": "epoch", "overrides": args.overrides, "epochs": len(epoch_times),
          "epoch_s": epoch_times, "wall_s": wall,
          "train_images_per_s_last_epoch": train_images / epoch_times[-1],
          "final": {k: v for k, v in summary["final"].items()
                    if k in ("val/miou", "val/pixacc", "val/abs_err", "val/abs_rel")},
          "train_total_per_epoch": [e["train/total"] for e in summary["history"]],
          **peak_memory_gb(device), "machine": machine(device)})


if __name__ == "__main__":
    main()
