"""The seed's comparison tables, read back from a seed-table sweep (sweeps/seed_table_*.yaml).

Each job's config names its table and row (`seed_table.table`, `seed_table.row`); jobs of one
row differ only in `trainer.seed`. For each row the table gives n (finished jobs) and, per
metric, mean +- standard error over them, taken at the checkpoint chosen on val (metrics.json
"best", as the seed reported) or as the mean of each job's last k validated epochs; both
mIoU and pixel-accuracy conventions (per image, the seed's, and over the dataset); Delta_m
of every multi-task row against the single-task rows of a named group; and the seed's
published figures beside ours.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from xtask_mt.reports.delta_m import DeltaMError, delta_m, headline_metrics
from xtask_mt.reports.job_dirs import find_job_dirs
from xtask_mt.reports.stats import last_k_mean, mean_se

# (mIoU %, pixel accuracy %, Abs, Abs Rel) as the seed's README prints them (per-image
# mIoU and pixel accuracy, checkpoint chosen on val); its Cityscapes Abs Rel is in %.
PUBLISHED: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "cityscapes": {"mtan": (53.04, 91.11, 0.0144, 33.63), "kd4mtl": (52.71, 91.54, 0.0139, 27.33),
                   "pcgrad": (53.59, 91.45, 0.0171, 31.34),
                   "adamtnet": (62.53, 94.16, 0.0125, 22.23),
                   "ours": (66.51, 93.56, 0.0122, 19.40)},
    "nyuv2": {"mtan": (20.10, 53.73, 0.6417, 0.2758), "kd4mtl": (22.44, 57.32, 0.6003, 0.2601),
              "pcgrad": (21.29, 54.07, 0.6705, 0.3000),
              "adamtnet": (20.61, 58.91, 0.6136, 0.2547), "ours": (30.31, 63.02, 0.5954, 0.2235)},
    "nyuv2_3task": {"mtan_3task": (21.07, 55.70, 0.6035, 0.2472),
                    "kd4mtl_3task": (20.75, 57.90, 0.5816, 0.2445),
                    "pcgrad_3task": (20.17, 56.65, 0.5904, 0.2467),
                    "adamtnet_3task": (21.86, 60.35, 0.5933, 0.2456)},
}
TABLE_TITLES = {"cityscapes": "Cityscapes (7 classes, 2 tasks)",
                "nyuv2": "NYUv2 (13 classes, 2 tasks)",
                "nyuv2_3task": "NYUv2 (13 classes, 3 tasks: reference rows)"}
ROW_NAMES = {"mtan": "MTAN", "pcgrad": "PCGrad", "kd4mtl": "KD4MTL", "adamtnet": "AdaMT-Net",
             "ours": "Ours", "stl_seg": "Single-task seg", "stl_depth": "Single-task depth",
             "stl_normal": "Single-task normal", "mtan_stl_seg": "MTAN single-task seg",
             "mtan_stl_depth": "MTAN single-task depth",
             "mtan_stl_normal": "MTAN single-task normal", "mtan_3task": "MTAN (3 tasks)",
             "kd4mtl_3task": "KD4MTL (3 tasks)", "pcgrad_3task": "PCGrad (3 tasks)",
             "adamtnet_3task": "AdaMT-Net (3 tasks)"}
# (column title, metric, factor to the seed's units, decimals); Cityscapes Abs Rel is x100 below
ROW_ORDER = ("stl_seg", "stl_depth", "stl_normal", "mtan_stl_seg", "mtan_stl_depth",
             "mtan_stl_normal", "mtan", "kd4mtl", "pcgrad", "adamtnet", "ours", "mtan_3task",
             "kd4mtl_3task", "pcgrad_3task", "adamtnet_3task")  # the seed's order, then others
COLUMNS = (("mIoU", "miou_legacy", 100.0, 2), ("mIoU (dataset)", "miou", 100.0, 2),
           ("Pix Acc", "pixacc_legacy", 100.0, 2), ("Pix Acc (dataset)", "pixacc", 100.0, 2),
           ("Abs", "abs_err", 1.0, 4), ("Abs Rel", "abs_rel", 1.0, 4))
NORMAL_COLUMNS = (("Normal mean", "normal_mean", 1.0, 2),
                  ("Normal median", "normal_median", 1.0, 2),
                  ("11.25", "normal_within_11", 100.0, 2), ("22.5", "normal_within_22", 100.0, 2),
                  ("30", "normal_within_30", 100.0, 2))


class SeedTableError(ValueError):
    """A sweep that holds no seed-table jobs, or options the table cannot honour."""


@dataclass
class Row:
    """The finished jobs of one row of one table."""

    table: str
    row: str
    tasks: tuple[str, ...]
    values: list[dict[str, float]] = field(default_factory=list)  # one per job
    unfinished: int = 0

    def stats(self, metric: str) -> tuple[float, float, int] | None:
        """(mean, standard error, n) of `metric` over the jobs that have it."""
        return mean_se(v[metric] for v in self.values if metric in v)

    def means(self) -> dict[str, float]:
        names = {k for v in self.values for k in v}
        return {k: s[0] for k in names if (s := self.stats(k)) is not None}


def _job_values(job_dir: Path, last_k: int) -> dict[str, float] | None:
    """The job's val figures (no prefix): best, or the mean of its last `last_k` epochs."""
    path = job_dir / "metrics.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    if last_k <= 0:
        source = summary.get("best", {})
        return {k[4:]: float(v) for k, v in source.items() if k.startswith("val/")}
    try:
        return {k[4:]: v for k, v in last_k_mean(summary.get("history", []), last_k).items()}
    except ValueError as exc:
        raise SeedTableError(f"{path}: {exc}") from exc


def load_rows(sweep_dir: Path, last_k: int = 0) -> list[Row]:
    """Every row of every seed table found under `sweep_dir`, in job order."""
    rows: dict[tuple[str, str], Row] = {}
    for job_dir in find_job_dirs(Path(sweep_dir)):
        config = job_dir / ".hydra" / "config.yaml"
        cfg = OmegaConf.load(config) if config.is_file() else None
        spec = cfg.get("seed_table") if cfg is not None else None
        if spec is None:
            continue
        key = (str(spec.table), str(spec.row))
        row = rows.setdefault(key, Row(*key, tuple(cfg.model.tasks)))
        values = _job_values(job_dir, last_k)
        if values is None:
            row.unfinished += 1
        else:
            row.values.append(values)
    if not rows:
        raise SeedTableError(f"no seed-table jobs under {sweep_dir}: run a sweep of "
                             "sweeps/seed_table_cityscapes.yaml or seed_table_nyuv2.yaml "
                             "(each job's config has seed_table.table and seed_table.row)")
    order = {name: i for i, name in enumerate(ROW_ORDER)}
    return sorted(rows.values(), key=lambda r: order.get(r.row, len(order)))


def _dataset(table: str) -> str:
    return table.split("_")[0]  # nyuv2_3task -> nyuv2


def _baselines(rows: Sequence[Row], group: str, dataset: str) -> dict[str, float]:
    """One figure per headline metric from the single-task rows named `<group>_<task>` of
    the tables of `dataset`."""
    merged: dict[str, float] = {}
    for row in rows:
        if row.row.startswith(f"{group}_") and len(row.tasks) == 1 \
                and _dataset(row.table) == dataset:
            wanted = headline_metrics(row.tasks)
            merged.update({k: v for k, v in row.means().items() if k in wanted})
    return merged


def _delta(row: Row, baselines: Mapping[str, float]) -> float | None:
    if len(row.tasks) < 2 or not row.values:
        return None
    try:
        value, _ = delta_m(row.means(), baselines, headline_metrics(row.tasks))
    except DeltaMError:
        return None
    return value


def _cell(stats: tuple[float, float, int] | None, factor: float, digits: int) -> str:
    if stats is None:
        return ""
    mean, se, _ = stats
    error = "" if math.isnan(se) else f" ± {se * factor:.{digits}f}"
    return f"{mean * factor:.{digits}f}{error}"


def _columns(table: str) -> list[tuple[str, str, float, int]]:
    if table == "cityscapes":  # the seed prints Cityscapes Abs Rel in %
        return [(t, m, 100.0, 2) if m == "abs_rel" else (t, m, f, d) for t, m, f, d in COLUMNS]
    return list(COLUMNS) + (list(NORMAL_COLUMNS) if table == "nyuv2_3task" else [])


def markdown(rows: Sequence[Row], baseline: str = "stl", last_k: int = 0) -> str:
    """The tables as Markdown: ours (mean ± SE, n) beside the seed's published figures."""
    chosen = f"mean of the last {last_k} epochs" if last_k else "checkpoint chosen on val"
    parts = []
    for table in dict.fromkeys(r.table for r in rows):
        columns = _columns(table)
        baselines = _baselines(rows, baseline, _dataset(table))
        published = PUBLISHED.get(table, {})
        head = ["Model", "n", *(column[0] for column in columns), f"Delta_m vs {baseline} (%)",
                "seed: mIoU", "Pix Acc", "Abs", "Abs Rel"]
        lines = [f"## {TABLE_TITLES.get(table, table)}", "",
                 f"mean ± standard error over n seeds, {chosen}; mIoU and Pix Acc per image "
                 "(the seed's convention) and over the dataset, in %"
                 + ("; Abs Rel x100 as the seed prints it" if table == "cityscapes" else ""),
                 "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in (r for r in rows if r.table == table):
            seed = published.get(row.row)
            n = f"{len(row.values)}" + (f" (+{row.unfinished} unfinished)" if row.unfinished
                                        else "")
            delta = _delta(row, baselines)
            cells = [ROW_NAMES.get(row.row, row.row), n,
                     *(_cell(row.stats(m), f, d) for _, m, f, d in columns),
                     "" if delta is None else f"{delta:+.2f}",
                     *((f"{seed[0]:.2f}", f"{seed[1]:.2f}", f"{seed[2]:.4f}",
                        f"{seed[3]:.2f}" if table == "cityscapes" else f"{seed[3]:.4f}")
                       if seed else ("",) * 4)]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    parts.append(f"Delta_m: mean relative difference to the single-task rows {baseline}_* over "
                 "mIoU, Pix Acc, Abs, Abs Rel (dataset conventions; and the normal metrics "
                 "for 3 tasks); > 0 is better than single-task.")
    return "\n\n".join(parts) + "\n"


def write_csv(rows: Sequence[Row], path: Path) -> None:
    """One line per row and metric: table, row, metric, mean, se, n (pandas-readable)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["table", "row", "metric", "mean", "se", "n"])
        for row in rows:
            for metric in sorted({k for v in row.values for k in v}):
                stats = row.stats(metric)
                if stats is not None:
                    writer.writerow([row.table, row.row, metric, *stats])


def write_seed_table(sweep_dir: Path, baseline: str = "stl", last_k: int = 0,
                     out_dir: Path | None = None) -> dict[str, Path]:
    """Write seed_table.md and seed_table.csv; returns their paths."""
    rows = load_rows(sweep_dir, last_k)
    if baseline not in {r.row.rsplit("_", 1)[0] for r in rows if len(r.tasks) == 1}:
        known = sorted({r.row.rsplit("_", 1)[0] for r in rows if len(r.tasks) == 1})
        raise SeedTableError(f"--baseline {baseline}: the sweep has no single-task rows "
                             f"{baseline}_<task>; it has {known or 'none'}")
    out = Path(out_dir or sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out / "seed_table.md", "csv": out / "seed_table.csv"}
    written["markdown"].write_text(markdown(rows, baseline, last_k))
    write_csv(rows, written["csv"])
    return written
