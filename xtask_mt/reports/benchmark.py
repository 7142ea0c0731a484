"""The field's benchmark tables, read back from a sweeps/bench_mtan.yaml or bench_libmtl.yaml
sweep, printed the way each protocol's papers print them.

Each job's config names its protocol, setting and row (`bench.protocol`, `bench.setting`,
`bench_row.name`); the jobs of one row differ only in `trainer.seed`. Per job, one figure per
metric (in the papers' units, reports.published):

- `mtan` (Nash-MTL / FAMO): the mean of its last k validated epochs (k = 10);
- `libmtl` (LibMTL / DB-MTL): the validated epoch with the highest Delta_p against the
  published single-task base (for the single-task row, each task's network at its own best
  epoch).

Per row: mean and standard error over its seeds of each metric and of the multi-task gain
against the published base and against our own single-task row, and the mean rank (MR) of
each multi-task row among ours (rank per metric, 1 = best, ties shared, then the mean over
the metrics). The gains:

- `mtan`: Delta_m = 100/K sum_k (-1)^l_k (M_k - B_k) / B_k over the K metrics, l_k = 1 where
  higher is better: lower is better (Navon et al., 2022);
- `libmtl`: Delta_p = 100/T sum_t 1/M_t sum_m (-1)^w (M - B) / B, w = 0 where higher is better,
  each task's metrics averaged first: higher is better (LibMTL's count_improvement).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from xtask_mt.reports.job_dirs import find_job_dirs
from xtask_mt.reports.published import (
    PUBLISHED_ROWS,
    SETTING_METRICS,
    SETTING_TASKS,
    STL_BASE,
    PublishedRow,
    paper_units,
)
from xtask_mt.reports.stats import mean_se
from xtask_mt.tasks import get_task, higher_is_better

PROTOCOLS = ("mtan", "libmtl")
MTAN_LAST_K = 10
STL_ROW = "stl"
ROW_ORDER = ("stl", "fixed", "uncertainty", "gradnorm", "dwa", "rlw", "gls", "scale_invariant",
             "famo", "pcgrad", "mgda", "mgda_ub", "imtl_g", "cagrad", "nash_mtl", "aligned_mtl",
             "upgrad", "graddrop", "gradvac", "config", "db_mtl", "fairgrad", "moco", "stch",
             "excess_mtl", "sdmgrad", "ours")
ROW_LABELS = {"stl": "STL", "uncertainty": "UW", "gradnorm": "GradNorm", "dwa": "DWA",
              "rlw": "RLW", "gls": "GLS", "scale_invariant": "Scale-invariant", "famo": "FAMO",
              "pcgrad": "PCGrad", "mgda": "MGDA", "mgda_ub": "MGDA-UB", "imtl_g": "IMTL-G",
              "cagrad": "CAGrad", "nash_mtl": "Nash-MTL", "aligned_mtl": "Aligned-MTL",
              "upgrad": "UPGrad", "graddrop": "GradDrop", "gradvac": "GradVac",
              "config": "ConFIG", "db_mtl": "DB-MTL", "fairgrad": "FairGrad", "moco": "MoCo",
              "stch": "STCH", "excess_mtl": "ExcessMTL", "sdmgrad": "SDMGrad",
              "ours": "Ours (consistency)"}
FIXED_LABEL = {"mtan": "LS", "libmtl": "EW"}  # equal weights, as each protocol names them
SETTING_TITLES = {"nyuv2": "NYUv2 (13 classes, 3 tasks)", "cityscapes": "Cityscapes (7 classes, "
                  "2 tasks)"}
PROTOCOL_TITLES = {"mtan": "Nash-MTL / FAMO protocol (SegNet-MTAN)",
                   "libmtl": "LibMTL protocol (DeepLabV3+, dilated ResNet-50)"}
COLUMN_TITLES = {"miou": "mIoU", "pixacc": "Pix Acc", "abs_err": "Abs Err", "abs_rel": "Rel Err",
                 "normal_mean": "Mean", "normal_median": "Median", "normal_within_11": "11.25",
                 "normal_within_22": "22.5", "normal_within_30": "30"}


class BenchmarkError(ValueError):
    """A sweep that holds no jobs of the asked protocol, or figures it cannot compare."""


def _sign(metric: str) -> int:
    return 1 if higher_is_better(metric) else -1


def _task_of(metric: str, tasks: Sequence[str]) -> str:
    return next(t for t in tasks if metric in get_task(t).headline_metrics)


def delta_m(values: Mapping[str, float], base: Mapping[str, float],
            metrics: Sequence[str]) -> float:
    """Nash-MTL's Delta_m (%) over `metrics`: lower is better."""
    return 100.0 / len(metrics) * sum(-_sign(m) * (values[m] - base[m]) / base[m]
                                      for m in metrics)


def delta_p(values: Mapping[str, float], base: Mapping[str, float],
            metrics: Sequence[str], tasks: Sequence[str]) -> float:
    """LibMTL's Delta_p (%): each task's metrics averaged, then the tasks; higher is better."""
    per_task = [[_sign(m) * (values[m] - base[m]) / base[m] for m in metrics
                 if _task_of(m, tasks) == task] for task in tasks]
    return 100.0 / len(tasks) * sum(sum(gains) / len(gains) for gains in per_task if gains)


def gain(protocol: str, values: Mapping[str, float], base: Mapping[str, float],
         setting: str) -> float:
    """The protocol's multi-task gain of `values` against `base` (papers' units)."""
    metrics = SETTING_METRICS[setting]
    if protocol == "mtan":
        return delta_m(values, base, metrics)
    return delta_p(values, base, metrics, SETTING_TASKS[setting])


def published_base(protocol: str, setting: str) -> dict[str, float]:
    return dict(zip(SETTING_METRICS[setting], STL_BASE[(protocol, setting)][0], strict=True))


def _in_paper_units(setting: str, entry: Mapping[str, float]) -> dict[str, float]:
    return {m: paper_units(setting, m, float(entry[f"val/{m}"]))
            for m in SETTING_METRICS[setting] if f"val/{m}" in entry}


def last_k_figures(setting: str, history: Sequence[Mapping[str, float]], k: int
                   ) -> tuple[dict[str, float], int]:
    """Each metric's mean over the last `k` validated epochs (all of them when there are
    fewer), and how many epochs that was."""
    validated = [h for h in history if any(key.startswith("val/") for key in h)]
    tail = [_in_paper_units(setting, h) for h in validated[-k:]]
    if not tail:
        return {}, 0
    return {m: sum(h[m] for h in tail) / len(tail) for m in SETTING_METRICS[setting]
            if all(m in h for h in tail)}, len(tail)


def best_epoch_figures(setting: str, history: Sequence[Mapping[str, float]],
                       base: Mapping[str, float], per_task: bool) -> dict[str, float]:
    """The figures of the validated epoch with the highest Delta_p against `base`; with
    `per_task` (separate single-task networks), each task's at its own best epoch."""
    epochs = [figures for h in history
              if len(figures := _in_paper_units(setting, h)) == len(SETTING_METRICS[setting])]
    if not epochs:
        return {}
    tasks = SETTING_TASKS[setting]
    groups = [[m for m in SETTING_METRICS[setting] if _task_of(m, tasks) == t] for t in tasks] \
        if per_task else [list(SETTING_METRICS[setting])]
    chosen: dict[str, float] = {}
    for metrics in groups:
        def score(figures: dict[str, float], metrics: list[str] = metrics) -> float:
            return sum(_sign(m) * (figures[m] - base[m]) / base[m] for m in metrics) \
                / len(metrics) if per_task else delta_p(figures, base, metrics, tasks)
        best = max(epochs, key=score)  # the first of equals
        chosen.update({m: best[m] for m in metrics})
    return chosen


@dataclass
class BenchRow:
    """The finished jobs of one row of one setting: each job's figures (papers' units)."""

    setting: str
    row: str
    figures: list[dict[str, float]] = field(default_factory=list)
    unfinished: int = 0
    short_history: int = 0  # jobs with fewer validated epochs than the protocol averages

    def stats(self, quantity: Callable[[dict[str, float]], float | None]
              ) -> tuple[float, float, int] | None:
        return mean_se(v for f in self.figures if (v := quantity(f)) is not None)

    def means(self) -> dict[str, float]:
        return {m: s[0] for m in SETTING_METRICS[self.setting]
                if (s := self.stats(lambda f, m=m: f.get(m))) is not None}


def load_rows(sweep_dir: Path, protocol: str, last_k: int = MTAN_LAST_K) -> list[BenchRow]:
    """Every row of every setting of `protocol` under `sweep_dir`, in ROW_ORDER."""
    if protocol not in PROTOCOLS:
        raise BenchmarkError(f"--table {protocol}: expected one of {list(PROTOCOLS)}")
    rows: dict[tuple[str, str], BenchRow] = {}
    for job_dir in find_job_dirs(Path(sweep_dir)):
        config = job_dir / ".hydra" / "config.yaml"
        cfg = OmegaConf.load(config) if config.is_file() else None
        spec = cfg.get("bench") if cfg is not None else None
        if spec is None or str(spec.get("protocol")) != protocol:
            continue
        setting, name = str(spec.setting), str(cfg.bench_row.name)
        row = rows.setdefault((setting, name), BenchRow(setting, name))
        metrics_file = job_dir / "metrics.json"
        if not metrics_file.is_file():
            row.unfinished += 1
            continue
        history = json.loads(metrics_file.read_text()).get("history", [])
        if protocol == "mtan":
            figures, epochs = last_k_figures(setting, history, last_k)
            row.short_history += epochs < last_k
        else:
            figures = best_epoch_figures(setting, history, published_base(protocol, setting),
                                         per_task=name == STL_ROW)
        if len(figures) < len(SETTING_METRICS[setting]):
            raise BenchmarkError(f"{metrics_file}: its history lacks some of "
                                 f"{list(SETTING_METRICS[setting])}")
        row.figures.append(figures)
    if not rows:
        raise BenchmarkError(f"no {protocol} benchmark jobs under {sweep_dir}: run "
                             f"sweeps/bench_{protocol}.yaml (each job's config has bench.protocol,"
                             " bench.setting and bench_row.name)")
    order = {name: i for i, name in enumerate(ROW_ORDER)}
    return sorted(rows.values(), key=lambda r: (r.setting != "nyuv2",
                                                order.get(r.row, order["ours"] - 0.5)))


def mean_ranks(rows: Sequence[BenchRow]) -> dict[str, float]:
    """MR of each multi-task row with figures: per metric, its rank by mean among them
    (1 = best, equal means share the mean of their ranks), averaged over the metrics."""
    multi = [r for r in rows if r.row != STL_ROW and r.figures]
    ranks: dict[str, list[float]] = {r.row: [] for r in multi}
    for metric in SETTING_METRICS[multi[0].setting] if multi else ():
        sign = _sign(metric)
        values = {r.row: sign * r.means()[metric] for r in multi}
        for name, value in values.items():
            better = sum(v > value for v in values.values())
            equal = sum(v == value for v in values.values())
            ranks[name].append(better + (equal + 1) / 2)
    return {name: sum(r) / len(r) for name, r in ranks.items() if r}


@dataclass
class SettingTable:
    """One setting's rows with their gains and ranks, ready to print."""

    protocol: str
    setting: str
    rows: list[BenchRow]
    base: dict[str, float]
    own_base: dict[str, float] | None
    ranks: dict[str, float]

    def gain_vs_published(self, row: BenchRow) -> tuple[float, float, int] | None:
        return row.stats(lambda f: gain(self.protocol, f, self.base, self.setting))

    def gain_vs_own(self, row: BenchRow) -> tuple[float, float, int] | None:
        if self.own_base is None:
            return None
        own = self.own_base
        return row.stats(lambda f: gain(self.protocol, f, own, self.setting))


def build_tables(rows: Sequence[BenchRow], protocol: str) -> list[SettingTable]:
    tables = []
    for setting in dict.fromkeys(r.setting for r in rows):
        mine = [r for r in rows if r.setting == setting]
        stl = next((r for r in mine if r.row == STL_ROW and r.figures), None)
        tables.append(SettingTable(protocol, setting, mine, published_base(protocol, setting),
                                   stl.means() if stl else None, mean_ranks(mine)))
    return tables


def _label(protocol: str, row: str) -> str:
    return FIXED_LABEL[protocol] if row == "fixed" else ROW_LABELS.get(row, row)


def _digits(setting: str, metric: str) -> int:
    """Decimals as the papers print them (Cityscapes Abs Err to 5 for the LibMTL base's
    0.01282)."""
    if metric == "abs_err":
        return 5 if setting == "cityscapes" else 4
    return 4 if metric == "abs_rel" and setting == "nyuv2" else 2


def _cell(stats: tuple[float, float, int] | None, digits: int = 2, signed: bool = False) -> str:
    if stats is None:
        return ""
    mean, se, _ = stats
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text + ("" if math.isnan(se) else f" ± {se:.{digits}f}")


def _published_line(table: SettingTable, row: PublishedRow, label: str) -> list[str]:
    metrics = SETTING_METRICS[table.setting]
    values = [f"{v:.{_digits(table.setting, m)}f}" for m, v in zip(metrics, row.values,
                                                                     strict=True)] \
        if row.values else [""] * len(metrics)
    return [label, "", *values, f"{row.delta:+.2f}", "", ""]


def markdown(tables: Sequence[SettingTable], last_k: int = MTAN_LAST_K) -> str:
    """The tables as Markdown: our rows (mean ± SE over n seeds) with the published row of
    each method under it, the published single-task base on top."""
    parts = []
    for table in tables:
        protocol, setting = table.protocol, table.setting
        metrics = SETTING_METRICS[setting]
        name = "Delta_m" if protocol == "mtan" else "Delta_p"
        arrow = "↓" if protocol == "mtan" else "↑"
        head = ["Method", "n", *(f"{COLUMN_TITLES[m]} {'↑' if _sign(m) > 0 else '↓'}"
                                 for m in metrics),
                f"{name} % {arrow} (published STL)", f"{name} % {arrow} (our STL)", "MR ↓"]
        chosen = (f"each job the mean of its last {last_k} epochs" if protocol == "mtan"
                  else "each job at its epoch best on val (Delta_p against the published STL)")
        base_values, base_source = STL_BASE[(protocol, setting)]
        lines = [f"## {PROTOCOL_TITLES[protocol]}: {SETTING_TITLES.get(setting, setting)}", "",
                 f"mean ± standard error over n seeds, {chosen}; mIoU, Pix Acc and the "
                 "within-angle shares in %"
                 + ("; Rel Err x100 as the papers print it" if setting == "cityscapes" else "")
                 + "; published rows in italics under ours.", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines.append("| " + " | ".join(_published_line(
            table, PublishedRow(STL_ROW, "STL", 0.0, base_source, base_values),
            f"*STL, published ({base_source})*")) + " |")
        published = {p.method: p for p in PUBLISHED_ROWS.get((protocol, setting), ())}
        for row in table.rows:
            n = f"{len(row.figures)}" + (f" (+{row.unfinished} unfinished)" if row.unfinished
                                         else "")
            rank = table.ranks.get(row.row)
            cells = [_label(protocol, row.row), n,
                     *(_cell(row.stats(lambda f, m=m: f.get(m)), _digits(setting, m))
                       for m in metrics),
                     _cell(table.gain_vs_published(row), signed=True),
                     _cell(table.gain_vs_own(row), signed=True),
                     "" if rank is None else f"{rank:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
            if (paper := published.pop(row.row, None)) is not None:
                lines.append("| " + " | ".join(_published_line(
                    table, paper, f"*{paper.label}, published ({paper.source})*")) + " |")
        for paper in published.values():  # methods we did not run
            lines.append("| " + " | ".join(_published_line(
                table, paper, f"*{paper.label}, published ({paper.source}); not run*")) + " |")
        short = sum(r.short_history for r in table.rows)
        if short:
            lines += ["", f"{short} job(s) validated fewer than {last_k} epochs: their figure is "
                      "the mean of the epochs they have."]
        parts.append("\n".join(lines))
    parts.append(_CONVENTIONS[tables[0].protocol] if tables else "")
    return "\n\n".join(parts) + "\n"


_CONVENTIONS = {
    "mtan": "Delta_m = 100/K sum_k (-1)^l_k (M_k - B_k)/B_k over the K metrics, l_k = 1 where "
            "higher is better: lower is better (Nash-MTL's convention; the opposite sign of "
            "this project's evaluate.py Delta_m). MR: mean over the metrics of each row's rank "
            "among our multi-task rows (1 = best).",
    "libmtl": "Delta_p = 100/T sum_t 1/M_t sum_m (-1)^w (M - B)/B, w = 0 where higher is "
              "better, each task's metrics averaged first: higher is better (LibMTL). MR: mean "
              "over the metrics of each row's rank among our multi-task rows (1 = best).",
}


def write_csv(tables: Sequence[SettingTable], path: Path) -> None:
    """Long format: protocol, setting, row, source (ours | published), quantity, mean, se, n;
    the quantities are the metrics (papers' units), delta_vs_published_stl,
    delta_vs_our_stl and mean_rank."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["protocol", "setting", "row", "source", "quantity", "mean", "se", "n"])
        for t in tables:
            for row in t.rows:
                stats = {m: row.stats(lambda f, m=m: f.get(m)) for m in SETTING_METRICS[t.setting]}
                stats |= {"delta_vs_published_stl": t.gain_vs_published(row),
                          "delta_vs_our_stl": t.gain_vs_own(row)}
                for quantity, s in stats.items():
                    if s is not None:
                        writer.writerow([t.protocol, t.setting, row.row, "ours", quantity, *s])
                if row.row in t.ranks:
                    writer.writerow([t.protocol, t.setting, row.row, "ours", "mean_rank",
                                     t.ranks[row.row], "", ""])
            for paper in PUBLISHED_ROWS.get((t.protocol, t.setting), ()):
                writer.writerow([t.protocol, t.setting, paper.method, "published",
                                 "delta_vs_published_stl", paper.delta, "", ""])
                for metric, value in zip(SETTING_METRICS[t.setting], paper.values or (),
                                         strict=False):
                    writer.writerow([t.protocol, t.setting, paper.method, "published", metric,
                                     value, "", ""])


def write_plot(table: SettingTable, path: Path) -> None:
    """Delta against the published STL per row: ours as mean ± SE error bars, the published
    figure of the same method as a cross."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table.rows if r.figures]
    published = {p.method: p.delta for p in PUBLISHED_ROWS.get((table.protocol, table.setting),
                                                               ())}
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(rows) + 1.6))
    for y, row in enumerate(rows):
        mean, se, _ = table.gain_vs_published(row)
        ax.errorbar(mean, y, xerr=0.0 if math.isnan(se) else se, fmt="o", color="tab:blue",
                    capsize=3, label="ours (mean ± SE)" if y == 0 else None)
        if row.row in published:
            ax.plot(published.pop(row.row), y, "x", color="tab:red", markersize=8,
                    label="published" if "published" not in
                    ax.get_legend_handles_labels()[1] else None)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [_label(table.protocol, r.row) for r in rows])
    ax.invert_yaxis()
    name = "Delta_m (%, lower is better)" if table.protocol == "mtan" \
        else "Delta_p (%, higher is better)"
    ax.set_xlabel(f"{name} against the published STL")
    ax.set_title(f"{PROTOCOL_TITLES[table.protocol]}: {table.setting}", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_benchmark(sweep_dir: Path, protocol: str, last_k: int = 0,
                    out_dir: Path | None = None) -> dict[str, Path]:
    """Write bench_<protocol>.md, .csv and a Delta plot per setting; returns their paths.
    `last_k` (mtan only): epochs averaged per job, 0 for the protocol's 10."""
    if last_k and protocol != "mtan":
        raise BenchmarkError("--last-k applies to --table mtan; the LibMTL protocol reports "
                             "each job at its epoch best on val")
    k = last_k or MTAN_LAST_K
    tables = build_tables(load_rows(Path(sweep_dir), protocol, k), protocol)
    out = Path(out_dir or sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out / f"bench_{protocol}.md", "csv": out / f"bench_{protocol}.csv"}
    written["markdown"].write_text(markdown(tables, k))
    write_csv(tables, written["csv"])
    for table in tables:
        if any(r.figures for r in table.rows):
            path = out / f"bench_{protocol}_{table.setting}_delta.png"
            write_plot(table, path)
            written[f"plot {table.setting}"] = path
    return written
