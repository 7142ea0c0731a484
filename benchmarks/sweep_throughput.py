"""Jobs per hour of a sweep of small training jobs, run one at a time and packed several at once.

    python benchmarks/sweep_throughput.py --jobs 4 --packs 1,2,4 model=mtan \
        dataset.height=128 dataset.width=256 dataset.batch_size=2 trainer.epochs=1

sequential: `train.py -m trainer.seed=0,...,N-1 <overrides>` with Hydra's basic launcher, the
N jobs one after another in one process. packed: for each pack size k, k jobs at once (one
wave) under hydra/launcher=local_parallel (joblib) with n_jobs=k; with a GPU (--gpu, or CUDA
available) also placement.jobs_per_gpu=k and placement.gpus=[0], so the k jobs share GPU 0.
On a CPU the packed jobs share the cores: joblib gives each worker cpu_count / k torch threads.

Each run trains into its own temporary sweep dir (logger=none, trainer.keep_checkpoints=none,
no progress bar). Without overrides the jobs are tiny (DEFAULT_OVERRIDES). Prints JSON: per
run the wall seconds from command start to end (start-up included), jobs/hour, each job's mean
training seconds (metrics.json), the torch threads each job logged (train.log) and every job
that did not finish (job.json). Exits 1 when a job failed; --out keeps the JSON, rewritten
after every run so an interrupted call keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import ROOT, emit

DEFAULT_OVERRIDES = ["encoder=resnet18", "dataset.height=64", "dataset.width=128",
                     "dataset.train_size=16", "dataset.val_size=8", "dataset.batch_size=2",
                     "trainer.epochs=1"]
# what every job of every run gets: nothing kept but metrics.json, job.json and train.log
FIXED_OVERRIDES = ["trainer.keep_checkpoints=none", "logger=none", "trainer.progress_bar=false"]
MODES = ("sequential", "packed")
# sweep_job logs this line when a launcher sets the job's threads (joblib, submitit)
THREADS_LINE = re.compile(r"(\d+) torch thread(?:s|\(s\)) in this job")


def int_list(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4], each at least 1."""
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,4, not {text!r}")
    return values


def mode_list(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if not modes or unknown:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}; got {text!r}")
    return modes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4,
                        help="jobs of the sequential sweep, and the pack size when --packs "
                             "is not given")
    parser.add_argument("--modes", type=mode_list, default=list(MODES),
                        help="sequential, packed or both (comma-separated)")
    parser.add_argument("--packs", type=int_list, default=None,
                        help="pack sizes to measure, e.g. 1,2,4,8: k jobs at once each "
                             "(default: --jobs)")
    parser.add_argument("--gpu", action="store_true",
                        help="pack the jobs onto GPU 0 (placement.*); the default when CUDA "
                             "is available")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides of every job (default: "
                             f"{' '.join(DEFAULT_OVERRIDES)})")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if any(o.lstrip("+~").startswith("trainer.seed=") for o in args.overrides):
        parser.error("trainer.seed is the swept key (seeds 0..N-1): leave it out of the overrides")
    return args


def sweep_command(jobs: int, overrides: list[str], sweep_dir: Path,
                  launcher: list[str]) -> list[str]:
    seeds = ",".join(str(s) for s in range(jobs))
    return [sys.executable, str(ROOT / "train.py"), "-m", f"trainer.seed={seeds}", *overrides,
            *FIXED_OVERRIDES, f"hydra.sweep.dir={sweep_dir}", *launcher]


def job_outcomes(sweep_dir: Path, jobs: int) -> tuple[list[dict[str, Any]], list[float],
                                                      list[int]]:
    """Per job of the sweep: failures (no job.json, or a status other than finished), the
    training seconds metrics.json records, and the torch threads train.log names."""
    failures, train_s, threads = [], [], []
    for num in range(jobs):
        job = sweep_dir / str(num)
        status_file = job / "job.json"
        if not status_file.is_file():
            failures.append({"job": num, "status": "missing",
                             "error": f"no {status_file} (the job did not start or crashed)"})
            continue
        status = json.loads(status_file.read_text())
        if status.get("status") != "finished":
            failures.append({"job": num, "status": status.get("status"),
                             "error": status.get("error")})
            continue
        metrics = json.loads((job / "metrics.json").read_text())
        train_s.append(sum(e["epoch_time_s"] for e in metrics["history"]))
        log = job / "train.log"
        found = THREADS_LINE.search(log.read_text()) if log.is_file() else None
        if found:
            threads.append(int(found.group(1)))
    return failures, train_s, threads


def run_sweep(mode: str, jobs: int, overrides: list[str], sweep_dir: Path,
              launcher: list[str]) -> dict[str, Any]:
    """Run one sweep, wall-clocked from command start to end; its figures and failures."""
    sweep_dir.mkdir(parents=True)
    command = sweep_command(jobs, overrides, sweep_dir, launcher)
    output = sweep_dir / "sweep.log"
    start = time.perf_counter()
    with output.open("w") as log:
        done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "HYDRA_FULL_ERROR": "1"}, check=False)
    wall = time.perf_counter() - start
    failures, train_s, threads = job_outcomes(sweep_dir, jobs)
    result: dict[str, Any] = {
        "mode": mode, "jobs": jobs, "at_once": 1 if mode == "sequential" else jobs,
        "launcher_overrides": launcher, "wall_s": wall, "jobs_per_hour": jobs * 3600 / wall,
        "finished": jobs - len(failures),
        "job_train_s_mean": sum(train_s) / len(train_s) if train_s else None,
        "torch_threads_per_job": sorted(set(threads)) or None,
        "returncode": done.returncode, "failures": failures,
    }
    if failures or done.returncode:
        result["output_tail"] = output.read_text()[-3000:]
    return result


def main() -> None:
    args = parse_args()
    overrides = args.overrides or DEFAULT_OVERRIDES
    gpu = args.gpu or torch.cuda.is_available()
    plan: list[tuple[str, int, list[str]]] = []
    if "sequential" in args.modes:
        plan.append(("sequential", args.jobs, []))
    if "packed" in args.modes:
        for k in args.packs or [args.jobs]:
            placement = [f"placement.jobs_per_gpu={k}", "placement.gpus=[0]"] if gpu else []
            plan.append(("packed", k, ["hydra/launcher=local_parallel",
                                       f"hydra.launcher.n_jobs={k}", *placement]))
    report: dict[str, Any] = {
        "benchmark": "sweep_throughput", "overrides": overrides, "gpu": gpu,
        "cpu_count": os.cpu_count(), "torch_default_threads": torch.get_num_threads(),
        "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="sweep_throughput_") as tmp:
        for i, (mode, jobs, launcher) in enumerate(plan):
            run = run_sweep(mode, jobs, overrides, Path(tmp) / f"{i}_{mode}_{jobs}", launcher)
            report["runs"].append(run)
            report["ok"] = all(not r["failures"] and not r["returncode"] for r in report["runs"])
            if args.out:
                args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    emit(report)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
