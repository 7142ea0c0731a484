"""Sweep report from a multirun dir alone (no W&B account needed).

`python -m xtask_mt.reports.sweep multirun/<date>/<time> [--metric val/miou]` writes report.md,
report.csv and, when the sweep varies both loss.alpha and loss.gamma, heatmap_<metric>.png.
With `--table seed` it writes the seed's comparison tables of a sweeps/seed_table_*.yaml
sweep instead (seed_table.md, seed_table.csv; see reports.seed_table).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from xtask_mt.reports.job_dirs import find_job_dirs, natural_key
from xtask_mt.reports.seed_table import SeedTableError, write_seed_table
from xtask_mt.tasks import get_task, higher_is_better, registered_tasks


@dataclass
class JobRecord:
    """What one job of a sweep left on disk."""

    job: str
    status: str  # finished | failed | interrupted | incomplete
    overrides: list[str] = field(default_factory=list)
    error: str = ""
    best_epoch: int | None = None
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    alpha: float | None = None
    gamma: float | None = None


def headline_columns(jobs: list[JobRecord]) -> tuple[str, ...]:
    """The registered tasks' headline validation metrics that some job has (for seg and
    depth: mIoU, pixel accuracy, abs and abs rel error; normals add their five)."""
    present = {k for r in jobs for k in (*r.best, *r.final)}
    return tuple(f"val/{name}" for task in registered_tasks()
                 for name in get_task(task).headline_metrics if f"val/{name}" in present)


def load_job(sweep_dir: Path, job_dir: Path) -> JobRecord:
    """Status, overrides and metrics of one job; a job with neither job.json nor metrics.json
    is still running or was killed (`incomplete`)."""
    rec = JobRecord(job=str(job_dir.relative_to(sweep_dir)), status="incomplete")
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if overrides_file.is_file():
        rec.overrides = [str(o) for o in OmegaConf.load(overrides_file)]
    status_file = job_dir / "job.json"
    if status_file.is_file():
        status = json.loads(status_file.read_text())
        rec.status = status.get("status", rec.status)
        rec.overrides = list(status.get("overrides", rec.overrides))
        rec.error = status.get("error", "")
    metrics_file = job_dir / "metrics.json"
    if metrics_file.is_file():
        summary = json.loads(metrics_file.read_text())
        rec.final, rec.best = summary.get("final", {}), summary.get("best", {})
        rec.best_epoch = summary.get("best_epoch")
        if rec.status == "incomplete":
            rec.status = "finished"
    config_file = job_dir / ".hydra" / "config.yaml"
    if config_file.is_file():
        loss = OmegaConf.load(config_file).get("loss", {})
        rec.alpha, rec.gamma = loss.get("alpha"), loss.get("gamma")
    return rec


def load_sweep(sweep_dir: Path) -> list[JobRecord]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a folder: pass the multirun dir of a sweep "
                                "(the hydra.sweep.dir, e.g. multirun/2024-01-01/12-00-00)")
    jobs = [load_job(sweep_dir, d) for d in find_job_dirs(sweep_dir)]
    if not jobs:
        raise FileNotFoundError(f"no jobs under {sweep_dir}: a job dir holds .hydra/overrides."
                                "yaml; is this the multirun dir of a `train.py -m` sweep?")
    return jobs


def sort_jobs(jobs: list[JobRecord], metric: str) -> list[JobRecord]:
    """Best first by the job's best `metric`; jobs without it last, in job order."""
    sign = -1.0 if higher_is_better(metric) else 1.0

    def key(rec: JobRecord) -> tuple:
        value = rec.best.get(metric)
        missing = value is None or math.isnan(value)
        return (missing, 0.0 if missing else sign * value, natural_key(rec.job))

    return sorted(jobs, key=key)


def varying_overrides(jobs: list[JobRecord]) -> tuple[list[str], list[str]]:
    """(overrides shared by all jobs, per-job display order of the ones that vary)."""
    common = set.intersection(*(set(r.overrides) for r in jobs)) if jobs else set()
    shared = [o for o in jobs[0].overrides if o in common] if jobs else []
    return shared, sorted({o for r in jobs for o in r.overrides} - common)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def markdown_table(jobs: list[JobRecord], metric: str,
                   columns: tuple[str, ...] | None = None) -> str:
    """Markdown: one row per job (varying overrides, status, best and final metrics)."""
    columns = tuple(dict.fromkeys((metric, *(columns or headline_columns(jobs)))))
    shared, _ = varying_overrides(jobs)
    order = "higher" if higher_is_better(metric) else "lower"
    lines = [f"Sorted by best {metric} ({order} is better). "
             f"Shared overrides: {' '.join(shared) or 'none'}.", ""]
    head = ["job", "overrides", "status", "best epoch"]
    head += [f"best {c}" for c in columns] + [f"final {c}" for c in columns] + ["note"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sort_jobs(jobs, metric):
        own = " ".join(o for o in r.overrides if o not in shared) or "(defaults)"
        cells = [r.job, own, r.status, "" if r.best_epoch is None else str(r.best_epoch)]
        cells += [_fmt(r.best.get(c)) for c in columns] + [_fmt(r.final.get(c)) for c in columns]
        cells.append(r.error.replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(jobs: list[JobRecord], metric: str, path: Path) -> None:
    """CSV with every metric, best and final, sorted like the Markdown table."""
    names = sorted({k for r in jobs for k in (*r.best, *r.final)})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", "status", "overrides", "alpha", "gamma", "best_epoch", "error"]
                        + [f"best {n}" for n in names] + [f"final {n}" for n in names])
        for r in sort_jobs(jobs, metric):
            writer.writerow([r.job, r.status, " ".join(r.overrides), r.alpha, r.gamma,
                             r.best_epoch, r.error] + [r.best.get(n, "") for n in names]
                            + [r.final.get(n, "") for n in names])


def alpha_gamma_grid(jobs: list[JobRecord], metric: str
                     ) -> tuple[list[float], list[float], list[list[float]]] | None:
    """(alphas, gammas, mean best `metric` per [gamma][alpha] cell, NaN where none finished),
    or None unless the sweep has at least two values of both alpha and gamma."""
    alphas = sorted({r.alpha for r in jobs if r.alpha is not None})
    gammas = sorted({r.gamma for r in jobs if r.gamma is not None})
    if len(alphas) < 2 or len(gammas) < 2:
        return None
    grid = []
    for g in gammas:
        row = []
        for a in alphas:
            values = [r.best[metric] for r in jobs
                      if r.alpha == a and r.gamma == g and metric in r.best]
            row.append(sum(values) / len(values) if values else math.nan)
        grid.append(row)
    return alphas, gammas, grid


def write_heatmap(jobs: list[JobRecord], metric: str, path: Path) -> bool:
    """PNG heatmap of the best `metric` over alpha x gamma; False when the sweep lacks either."""
    found = alpha_gamma_grid(jobs, metric)
    if found is None:
        return False
    from matplotlib.figure import Figure

    alphas, gammas, grid = found
    fig = Figure(figsize=(1.2 * len(alphas) + 2.5, 0.9 * len(gammas) + 1.8))
    ax = fig.add_subplot()
    cmap = "viridis" if higher_is_better(metric) else "viridis_r"
    image = ax.imshow(grid, cmap=cmap, origin="lower", aspect="auto")
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(gammas)), [f"{g:g}" for g in gammas])
    ax.set_xlabel("loss.alpha (transferred depth weight)")
    ax.set_ylabel("loss.gamma (transferred seg weight)")
    ax.set_title(f"best {metric}")
    for y, row in enumerate(grid):
        for x, value in enumerate(row):
            ax.text(x, y, "no result" if math.isnan(value) else f"{value:.4f}", ha="center",
                    va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def write_report(sweep_dir: Path, metric: str = "val/miou",
                 columns: tuple[str, ...] | None = None,
                 out_dir: Path | None = None) -> dict[str, Path]:
    """Write report.md, report.csv and (if possible) the heatmap; returns their paths."""
    jobs = load_sweep(Path(sweep_dir))
    out_dir = Path(out_dir or sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out_dir / "report.md", "csv": out_dir / "report.csv"}
    written["markdown"].write_text(markdown_table(jobs, metric, columns))
    write_csv(jobs, metric, written["csv"])
    heatmap = out_dir / f"heatmap_{metric.replace('/', '_')}.png"
    if write_heatmap(jobs, metric, heatmap):
        written["heatmap"] = heatmap
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xtask_mt.reports.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="multirun dir (hydra.sweep.dir)")
    parser.add_argument("--metric", default="val/miou", help="sort and heatmap metric")
    parser.add_argument("--columns", default="",
                        help="comma-separated metrics shown in the Markdown table "
                        "(default: the headline metrics of the tasks the jobs have)")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: sweep)")
    parser.add_argument("--table", choices=("jobs", "seed"), default="jobs",
                        help="jobs: one line per job (default); seed: the seed's comparison "
                        "tables from a sweeps/seed_table_*.yaml sweep")
    parser.add_argument("--baseline", default="stl",
                        help="--table seed: Delta_m against the single-task rows "
                        "<baseline>_<task> (stl: ResNet; mtan_stl: MTAN)")
    parser.add_argument("--last-k", type=int, default=0,
                        help="--table seed: mean of each job's last k validated epochs "
                        "instead of its checkpoint chosen on val")
    args = parser.parse_args(argv)
    try:
        if args.table == "seed":
            written = write_seed_table(args.sweep_dir, args.baseline, args.last_k, args.out)
        else:
            written = write_report(args.sweep_dir, args.metric,
                                   tuple(c for c in args.columns.split(",") if c) or None,
                                   args.out)
    except (FileNotFoundError, SeedTableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(written["markdown"].read_text())
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
