"""Sweep report from a multirun dir alone (no W&B account needed).

`python -m xtask_mt.reports.sweep multirun/<date>/<time> [--metric val/miou] [--last-k 5]`
writes report.md (one line per job, then the jobs that differ only in trainer.seed grouped:
mean ± standard error, n), report.csv and, when the sweep varies both loss.alpha and
loss.gamma, heatmap_<metric>.png (a grid, mean over seeds) or, for sampled (Optuna) values,
scatter_<metric>.png. A multi-objective sweep (hparams_search=optuna_pareto, or
`--pareto a,b`) adds its Pareto front to report.md and pareto_<a>_<b>.png.
With `--table seed` it writes the seed's comparison tables of a sweeps/seed_table_*.yaml
sweep instead (seed_table.md, seed_table.csv; see reports.seed_table). With `--table mtan` or
`--table libmtl` it writes that benchmark protocol's tables of a sweeps/bench_*.yaml sweep
(bench_<protocol>.md, .csv and a Delta plot per setting; see reports.benchmark); `--table
study` and `--table ablation` the seed's consistency-method and ablation studies (see
reports.seed_studies).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from xtask_mt.reports.benchmark import BenchmarkError, write_benchmark
from xtask_mt.reports.job_dirs import find_job_dirs, natural_key
from xtask_mt.reports.pareto import pareto_markdown, write_pareto_plot
from xtask_mt.reports.seed_studies import SeedStudyError, write_ablation, write_study
from xtask_mt.reports.seed_table import SeedTableError, write_seed_table
from xtask_mt.reports.stats import last_k_mean, mean_se
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
    history: list[dict[str, float]] = field(default_factory=list)
    objectives: tuple[str, ...] = ()  # search.objectives of a multi-objective search

    @property
    def setting(self) -> tuple[str, ...]:
        """The job's overrides but its seed: what the jobs of one seed group share."""
        return tuple(o for o in self.overrides if not o.startswith(SEED_KEY))


SEED_KEY = "trainer.seed="


class SweepReportError(ValueError):
    """A report request the sweep cannot answer (e.g. a metric no job reports)."""


def headline_columns(jobs: list[JobRecord]) -> tuple[str, ...]:
    """The registered tasks' headline validation metrics that some job has (for seg and
    depth: mIoU, pixel accuracy, abs and abs rel error; normals add their five)."""
    present = {k for r in jobs for k in (*r.best, *r.final)}
    return tuple(f"val/{name}" for task in registered_tasks()
                 for name in get_task(task).headline_metrics if f"val/{name}" in present)


def _hydra_file(job_dir: Path, name: str, rec: JobRecord) -> DictConfig | ListConfig | None:
    """The job's .hydra/<name>, None when absent or cut short (a job killed while Hydra wrote
    it): one such job must not stop the report, which notes the file in the job's row."""
    path = job_dir / ".hydra" / name
    if not path.is_file():
        return None
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError:
        rec.error = "; ".join(filter(None, (rec.error, f"unreadable .hydra/{name}")))
        return None


def load_job(sweep_dir: Path, job_dir: Path) -> JobRecord:
    """Status, overrides and metrics of one job; a job with neither job.json nor metrics.json
    is still running or was killed (`incomplete`)."""
    rec = JobRecord(job=str(job_dir.relative_to(sweep_dir)), status="incomplete")
    overrides = _hydra_file(job_dir, "overrides.yaml", rec)
    if overrides is not None:
        rec.overrides = [str(o) for o in overrides]
    status_file = job_dir / "job.json"
    if status_file.is_file():
        status = json.loads(status_file.read_text())
        rec.status = status.get("status", rec.status)
        rec.overrides = list(status.get("overrides", rec.overrides))
        rec.error = "; ".join(filter(None, (status.get("error", ""), rec.error)))
    metrics_file = job_dir / "metrics.json"
    if metrics_file.is_file():
        summary = json.loads(metrics_file.read_text())
        rec.final, rec.best = summary.get("final", {}), summary.get("best", {})
        rec.best_epoch = summary.get("best_epoch")
        rec.history = list(summary.get("history", []))
        if rec.status == "incomplete":
            rec.status = "finished"
    config = _hydra_file(job_dir, "config.yaml", rec)
    if config is not None:
        loss = config.get("loss", {})
        rec.alpha, rec.gamma = loss.get("alpha"), loss.get("gamma")
        rec.objectives = tuple(OmegaConf.select(config, "search.objectives", default=None)
                               or ())
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
                   columns: tuple[str, ...] | None = None, last_k: int = 0) -> str:
    """Markdown: one row per job (varying overrides, status, best and final metrics), then,
    when trainer.seed varies (or `last_k` is asked), the settings grouped over seeds."""
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
    text = "\n".join(lines) + "\n"
    if any(o.startswith(SEED_KEY) for r in jobs for o in r.overrides) or last_k:
        text += "\n" + grouped_table(jobs, metric, columns, last_k)
    return text


@dataclass
class SeedGroup:
    """Finished jobs that differ only in trainer.seed, and the values they are compared by."""

    setting: tuple[str, ...]
    values: list[dict[str, float]]  # per job: best figures, or the mean of its last k epochs

    def stats(self, metric: str) -> tuple[float, float, int] | None:
        return mean_se(v[metric] for v in self.values if metric in v)


def seed_groups(jobs: list[JobRecord], last_k: int = 0) -> list[SeedGroup]:
    """The finished jobs grouped by their overrides but trainer.seed, in job order; each job
    counts with its best figures or, with `last_k`, the mean of its last k epochs."""
    groups: dict[tuple[str, ...], SeedGroup] = {}
    for rec in jobs:
        if rec.status != "finished" or not rec.best:
            continue
        if last_k:
            try:
                values = last_k_mean(rec.history, last_k)
            except ValueError as exc:
                raise SweepReportError(f"job {rec.job}: {exc}") from exc
        else:
            values = rec.best
        groups.setdefault(rec.setting, SeedGroup(rec.setting, [])).values.append(values)
    return list(groups.values())


def _mean_se_text(stats: tuple[float, float, int] | None) -> str:
    if stats is None:
        return ""
    mean, se, _ = stats
    return f"{mean:.4f}" if math.isnan(se) else f"{mean:.4f} ± {se:.4f}"


def grouped_table(jobs: list[JobRecord], metric: str, columns: tuple[str, ...],
                  last_k: int = 0) -> str:
    """Markdown: one line per setting, its seeds' mean ± standard error and n, best first."""
    groups = seed_groups(jobs, last_k)
    shared, _ = varying_overrides(jobs)
    sign = -1.0 if higher_is_better(metric) else 1.0

    def key(group: SeedGroup) -> float:
        stats = group.stats(metric)
        return math.inf if stats is None else sign * stats[0]

    source = f"mean of each job's last {last_k} epochs" if last_k else "each job's best epoch"
    lines = [f"## Grouped over {SEED_KEY[:-1]}", "",
             f"Mean ± standard error over the seeds of each setting ({source}), n finished "
             "jobs, sorted by the mean of " + metric + ".", ""]
    head = ["setting", "n", *columns]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in sorted(groups, key=key):
        own = " ".join(o for o in group.setting if o not in shared) or "(defaults)"
        lines.append("| " + " | ".join([own, str(len(group.values)),
                                        *(_mean_se_text(group.stats(c)) for c in columns)])
                     + " |")
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


def _alpha_gamma_points(jobs: list[JobRecord], metric: str
                        ) -> dict[tuple[float, float], list[float]]:
    """The best `metric` of each finished job, by its (alpha, gamma)."""
    points: dict[tuple[float, float], list[float]] = {}
    for r in jobs:
        if r.alpha is not None and r.gamma is not None and metric in r.best:
            points.setdefault((float(r.alpha), float(r.gamma)), []).append(r.best[metric])
    return points


Grid = tuple[list[float], list[float], list[list[float]], list[list[int]]]


def alpha_gamma_grid(jobs: list[JobRecord], metric: str) -> Grid | None:
    """(alphas, gammas, mean best `metric` over seeds per [gamma][alpha] cell (NaN where none
    finished), jobs per cell), or None unless the jobs form a grid: at least two values of
    both alpha and gamma, and at least half the cells tried (sampled values do not)."""
    alphas = sorted({float(r.alpha) for r in jobs if r.alpha is not None})
    gammas = sorted({float(r.gamma) for r in jobs if r.gamma is not None})
    tried = {(float(r.alpha), float(r.gamma)) for r in jobs
             if r.alpha is not None and r.gamma is not None}
    if len(alphas) < 2 or len(gammas) < 2 or 2 * len(tried) < len(alphas) * len(gammas):
        return None
    points = _alpha_gamma_points(jobs, metric)
    grid = [[sum(points[(a, g)]) / len(points[(a, g)]) if (a, g) in points else math.nan
             for a in alphas] for g in gammas]
    counts = [[len(points.get((a, g), [])) for a in alphas] for g in gammas]
    return alphas, gammas, grid, counts


_ALPHA_LABEL = "loss.alpha (transferred depth weight)"
_GAMMA_LABEL = "loss.gamma (transferred seg weight)"


def _label_colour(rgba: tuple[float, ...]) -> str:
    """Black on light cells, white on dark ones (relative luminance of the cell)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def write_heatmap(jobs: list[JobRecord], metric: str, path: Path) -> bool:
    """PNG heatmap of the best `metric` over an alpha x gamma grid, each cell the mean over
    its seeds (n shown where more than one); False when the jobs form no such grid."""
    found = alpha_gamma_grid(jobs, metric)
    if found is None:
        return False
    import matplotlib
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    alphas, gammas, grid, counts = found
    fig = Figure(figsize=(1.3 * len(alphas) + 2.5, 0.9 * len(gammas) + 1.8))
    ax = fig.add_subplot()
    # cells without a finished job: light grey, labelled
    cmap = matplotlib.colormaps["viridis" if higher_is_better(metric) else "viridis_r"
                                ].with_extremes(bad="#d9d9d9")
    finite = [v for row in grid for v in row if not math.isnan(v)]
    norm = Normalize(min(finite), max(finite)) if finite else Normalize(0, 1)
    image = ax.imshow(grid, cmap=cmap, norm=norm, origin="lower", aspect="auto")
    ax.set_xticks(range(len(alphas)), [f"{a:.3g}" for a in alphas])
    ax.set_yticks(range(len(gammas)), [f"{g:.3g}" for g in gammas])
    ax.set_xlabel(_ALPHA_LABEL)
    ax.set_ylabel(_GAMMA_LABEL)
    seeds = max(c for row in counts for c in row)
    ax.set_title(f"best {metric}" + (" (mean over seeds)" if seeds > 1 else ""))
    for y, row in enumerate(grid):
        for x, value in enumerate(row):
            if math.isnan(value):
                ax.text(x, y, "no result", ha="center", va="center", color="black",
                        fontsize=8, fontstyle="italic")
                continue
            n = counts[y][x]
            ax.text(x, y, f"{value:.4f}" + (f"\nn={n}" if seeds > 1 else ""), ha="center",
                    va="center", color=_label_colour(cmap(norm(value))), fontsize=8)
    fig.colorbar(image, ax=ax, label=metric)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def write_scatter(jobs: list[JobRecord], metric: str, path: Path) -> bool:
    """PNG scatter of sampled (alpha, gamma) values coloured by the best `metric` (for
    Optuna-style sweeps whose values form no grid); False with fewer than two points."""
    points = _alpha_gamma_points(jobs, metric)
    if len(points) < 2:
        return False
    from matplotlib.figure import Figure

    xs, ys = zip(*points, strict=True)
    values = [sum(v) / len(v) for v in points.values()]
    fig = Figure(figsize=(6.5, 5))
    ax = fig.add_subplot()
    cmap = "viridis" if higher_is_better(metric) else "viridis_r"
    dots = ax.scatter(xs, ys, c=values, cmap=cmap, s=60, edgecolors="black", linewidths=0.5)
    for data, scale in ((xs, ax.set_xscale), (ys, ax.set_yscale)):
        positive = [v for v in data if v > 0]
        if len(positive) == len(data) and max(positive) > 10 * min(positive):
            scale("log")
    best = max(range(len(values)), key=lambda i: values[i] * (1 if higher_is_better(metric)
                                                               else -1))
    ax.scatter([xs[best]], [ys[best]], s=220, facecolors="none", edgecolors="red",
               linewidths=1.5, label=f"best: {values[best]:.4f}")
    ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(_ALPHA_LABEL)
    ax.set_ylabel(_GAMMA_LABEL)
    ax.set_title(f"best {metric} of {len(points)} sampled settings")
    fig.colorbar(dots, ax=ax, label=metric)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def known_metrics(jobs: list[JobRecord]) -> list[str]:
    """Every metric some job reports (best or final)."""
    return sorted({k for r in jobs for k in (*r.best, *r.final)})


DEFAULT_METRIC = "val/miou"


def write_report(sweep_dir: Path, metric: str = DEFAULT_METRIC,
                 columns: tuple[str, ...] | None = None,
                 out_dir: Path | None = None, last_k: int = 0,
                 objectives: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Write report.md, report.csv and (if possible) the heatmap or scatter, and for two or
    more `objectives` (default: the sweep's search.objectives) the Pareto front; returns the
    paths. A metric (or column, or objective) that no job reports is refused with the known
    ones."""
    jobs = load_sweep(Path(sweep_dir))
    objectives = objectives or next((r.objectives for r in jobs if r.objectives), ())
    if len(objectives) == 1:
        raise SweepReportError(f"--pareto {objectives[0]}: a front needs two or more metrics")
    known = known_metrics(jobs)
    if metric == DEFAULT_METRIC and metric not in known and known:
        metric = next((c for c in headline_columns(jobs)), known[0])  # e.g. a depth-only sweep
    unknown = [m for m in (metric, *(columns or ()), *objectives) if m not in known]
    if known and unknown:
        raise SweepReportError(f"no job reports {', '.join(unknown)}; the jobs report: "
                               f"{', '.join(known)}")
    out_dir = Path(out_dir or sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out_dir / "report.md", "csv": out_dir / "report.csv"}
    text = markdown_table(jobs, metric, columns, last_k)
    if objectives:
        _, varying = varying_overrides(jobs)
        shown = {r.job: " ".join(o for o in r.overrides if o in varying) for r in jobs}
        text += "\n" + pareto_markdown(jobs, objectives, shown)
        plot = out_dir / ("pareto_" + "_".join(m.replace("/", "_") for m in objectives[:2])
                          + ".png")
        if write_pareto_plot(jobs, objectives, plot):
            written["pareto"] = plot
    written["markdown"].write_text(text)
    write_csv(jobs, metric, written["csv"])
    name = metric.replace("/", "_")
    if write_heatmap(jobs, metric, out_dir / f"heatmap_{name}.png"):
        written["heatmap"] = out_dir / f"heatmap_{name}.png"
    elif write_scatter(jobs, metric, out_dir / f"scatter_{name}.png"):
        written["scatter"] = out_dir / f"scatter_{name}.png"
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xtask_mt.reports.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="multirun dir (hydra.sweep.dir)")
    parser.add_argument("--metric", default=DEFAULT_METRIC,
                        help="sort and heatmap metric (default val/miou, or the first headline "
                        "metric of sweeps without segmentation)")
    parser.add_argument("--columns", default="",
                        help="comma-separated metrics shown in the Markdown table "
                        "(default: the headline metrics of the tasks the jobs have)")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: sweep)")
    parser.add_argument("--table", choices=("jobs", "seed", "mtan", "libmtl", "study",
                                            "ablation"), default="jobs",
                        help="jobs: one line per job (default); seed: the seed's comparison "
                        "tables from a sweeps/seed_table_*.yaml sweep; mtan, libmtl: that "
                        "benchmark protocol's tables from sweeps/bench_<protocol>.yaml; study, "
                        "ablation: the seed's studies from sweeps/consistency_study.yaml, "
                        "seed_ablation.yaml")
    parser.add_argument("--baseline", default="stl",
                        help="--table seed: Delta_m against the single-task rows "
                        "<baseline>_<task> (stl: ResNet; mtan_stl: MTAN)")
    parser.add_argument("--pareto", default="",
                        help="comma-separated metrics (two or more): add their Pareto front "
                        "(default: the sweep's search.objectives, if any)")
    parser.add_argument("--last-k", type=int, default=0,
                        help="compare seeds by the mean of each job's last k validated epochs "
                        "instead of its best epoch")
    args = parser.parse_args(argv)
    try:
        if args.table == "seed":
            written = write_seed_table(args.sweep_dir, args.baseline, args.last_k, args.out)
        elif args.table in ("mtan", "libmtl"):
            written = write_benchmark(args.sweep_dir, args.table, args.last_k, args.out)
        elif args.table == "study":
            written = write_study(args.sweep_dir, args.out)
        elif args.table == "ablation":
            written = write_ablation(args.sweep_dir, args.last_k, args.out)
        else:
            written = write_report(args.sweep_dir, args.metric,
                                   tuple(c for c in args.columns.split(",") if c) or None,
                                   args.out, args.last_k,
                                   tuple(m for m in args.pareto.split(",") if m) or None)
    except (FileNotFoundError, SeedTableError, SeedStudyError, SweepReportError,
            BenchmarkError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(written["markdown"].read_text())
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
