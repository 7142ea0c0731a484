"""Final validation figures of one training job under several precisions and seeds.

    python benchmarks/precision_parity.py --seeds 0,1,2 --precisions 32,bf16-mixed

Trains the composed config (by default the synthetic 5-epoch job) once per (precision, seed)
in a temporary folder and prints JSON: each run's final validation figures and, per
precision, their mean and sample standard deviation over the seeds. Two precisions reach the
same mIoU "within noise" when the gap between their means is inside the seed-to-seed spread.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import emit, machine, parse

from xtask_mt.config.build import resolve_device
from xtask_mt.engine.trainer import train

FIGURES = ("val/miou", "val/pixacc", "val/abs_err")


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else float("nan")}


def main() -> None:
    args, cfg = parse(__doc__.splitlines()[0],
                      seeds=(str, "0,1,2", "comma-separated trainer.seed values"),
                      precisions=(str, "32,bf16-mixed", "comma-separated trainer.precision"))
    logging.basicConfig(level=logging.WARNING)
    cfg.trainer.progress_bar = False
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, summary = [], {}
    for precision in args.precisions.split(","):
        cfg.trainer.precision = precision
        finals = []
        for seed in seeds:
            cfg.trainer.seed = seed
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                final = train(cfg, Path(tmp))["final"]
            finals.append({k: final[k] for k in FIGURES if k in final})
            runs.append({"precision": precision, "seed": seed, **finals[-1],
                         "wall_s": time.perf_counter() - start})
            print(f"run {len(runs)}: {runs[-1]}", file=sys.stderr, flush=True)  # progress
        summary[precision] = {k: spread([f[k] for f in finals]) for k in finals[0]}
    emit({"benchmark": "precision_parity", "overrides": args.overrides, "runs": runs,
          "summary": summary, "machine": machine(resolve_device(str(cfg.trainer.device)))})


if __name__ == "__main__":
    main()
