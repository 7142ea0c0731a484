"""The seed's two studies, read back from their sweeps.

Consistency-method study (sweeps/consistency_study.yaml): for each consistency target
(`prediction`, the method, "xtsc"; `label`, XTC) and each validated epoch, the mean over the
seeds of the validation loss (the sum of the tasks' direct losses on the val split, which
both methods define alike) and of `val/consistency_energy`, with a band of one standard
deviation over the seeds, plotted as the seed's figure draws them (loss and energy per epoch
side by side).

Ablation study (sweeps/seed_ablation.yaml): one row per arm, the mean +- standard error over
its seeds of each headline metric (best epoch on val, or the mean of each job's last k
validated epochs) and the difference of means to the full method.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from xtask_mt.metrics import ENERGY_KEY
from xtask_mt.reports.job_dirs import find_job_dirs
from xtask_mt.reports.stats import last_k_mean, mean_se

METHOD_NAMES = {"prediction": "xtsc (against the direct prediction)",
                "label": "xtc (against the ground truth)"}
ARM_ORDER = ("full", "no_alpha", "no_gamma", "no_alpha_gamma", "pretrained", "resnet50",
             "resnet101", "no_smoothing", "no_smoothing_no_uncertainty")
# (column title, metric without val/, factor, decimals)
ABLATION_COLUMNS = (("mIoU (%)", "miou", 100.0, 2), ("Pix Acc (%)", "pixacc", 100.0, 2),
                    ("Abs", "abs_err", 1.0, 4), ("Abs Rel", "abs_rel", 1.0, 4))
FULL_ARM = "full"


class SeedStudyError(ValueError):
    """A sweep that holds no job of the study asked for, or figures it cannot give."""


@dataclass
class _Job:
    directory: Path
    config: object
    summary: dict | None


def _jobs(sweep_dir: Path) -> list[_Job]:
    jobs = []
    for job_dir in find_job_dirs(Path(sweep_dir)):
        config = job_dir / ".hydra" / "config.yaml"
        if not config.is_file():
            continue
        metrics = job_dir / "metrics.json"
        summary = json.loads(metrics.read_text()) if metrics.is_file() else None
        jobs.append(_Job(job_dir, OmegaConf.load(config), summary))
    return jobs


# ---- consistency-method study ---------------------------------------------------------------

@dataclass
class Curve:
    """Per epoch, the seeds' values of one figure of one method."""

    by_epoch: dict[int, list[float]] = field(default_factory=dict)

    def add(self, epoch: int, value: float) -> None:
        if math.isfinite(value):
            self.by_epoch.setdefault(epoch, []).append(value)

    def points(self) -> list[tuple[int, float, float, int]]:
        """(epoch, mean, standard deviation (0 for one seed), n) per epoch, in order."""
        out = []
        for epoch in sorted(self.by_epoch):
            xs = self.by_epoch[epoch]
            mean = sum(xs) / len(xs)
            std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) \
                if len(xs) > 1 else 0.0
            out.append((epoch, mean, std, len(xs)))
        return out


@dataclass
class Method:
    """The finished jobs of one consistency target."""

    target: str
    loss: Curve = field(default_factory=Curve)
    energy: Curve = field(default_factory=Curve)
    best: list[dict[str, float]] = field(default_factory=list)
    unfinished: int = 0


def validation_loss(row: dict[str, float], tasks: Sequence[str]) -> float:
    """The sum of the tasks' direct validation losses of a history row (NaN if one lacks)."""
    keys = [f"val/loss_{task}" for task in tasks]
    return sum(float(row[k]) for k in keys) if all(k in row for k in keys) else math.nan


def load_study(sweep_dir: Path) -> dict[str, Method]:
    """The study's jobs by consistency target, in the order prediction, label."""
    methods: dict[str, Method] = {}
    for job in _jobs(sweep_dir):
        target = str(OmegaConf.select(job.config, "loss.consistency_target",
                                      default="prediction"))
        method = methods.setdefault(target, Method(target))
        if job.summary is None:
            method.unfinished += 1
            continue
        tasks = list(job.config.model.tasks)
        for row in job.summary.get("history", []):
            method.loss.add(int(row["epoch"]), validation_loss(row, tasks))
            if f"val/{ENERGY_KEY}" in row:
                method.energy.add(int(row["epoch"]), float(row[f"val/{ENERGY_KEY}"]))
        method.best.append({k: float(v) for k, v in job.summary.get("best", {}).items()})
    if not any(m.loss.by_epoch for m in methods.values()):
        raise SeedStudyError(f"no finished job with a validation history under {sweep_dir}: "
                             "run sweeps/consistency_study.yaml and report its sweep dir")
    order = {name: i for i, name in enumerate(METHOD_NAMES)}
    return dict(sorted(methods.items(), key=lambda kv: order.get(kv[0], len(order))))


def _pm(stats: tuple[float, float, int] | None, factor: float = 1.0, decimals: int = 4) -> str:
    if stats is None:
        return ""
    mean, se, _ = stats
    text = f"{factor * mean:.{decimals}f}"
    return text if math.isnan(se) else f"{text} ± {factor * se:.{decimals}f}"


def study_markdown(methods: dict[str, Method]) -> str:
    """Per method: seeds, last epoch, the last epoch's validation loss and energy (mean ±
    standard error over seeds) and the best epoch's mIoU and abs error."""
    lines = ["## Consistency-method study", "",
             "Validation loss: the sum of the tasks' direct losses on val. Energy: "
             "val/consistency_energy. Last epoch: mean ± standard error over the seeds; "
             "best: each job's best epoch on val.", "",
             "| method | n | last epoch | val loss | consistency energy | best mIoU (%) "
             "| best abs err |", "|---|---|---|---|---|---|---|"]
    for target, m in methods.items():
        loss = m.loss.points()
        last = loss[-1][0] if loss else None
        at_last = (mean_se(m.loss.by_epoch.get(last, [])), mean_se(m.energy.by_epoch.get(
            last, []))) if last is not None else (None, None)
        cells = [METHOD_NAMES.get(target, target), str(len(m.best)),
                 "" if last is None else str(last), _pm(at_last[0]), _pm(at_last[1]),
                 _pm(mean_se(b.get("val/miou") for b in m.best), 100.0, 2),
                 _pm(mean_se(b.get("val/abs_err") for b in m.best))]
        if m.unfinished:
            cells[1] += f" ({m.unfinished} unfinished)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_study_plot(methods: dict[str, Method], path: Path) -> None:
    """Validation loss and consistency energy per epoch, one line per method (mean over
    the seeds) with a band of one standard deviation."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 4.5))
    panels = (("loss", "validation loss (sum of direct losses)", "Loss history"),
              ("energy", "consistency energy", "Energy history"))
    colours = {"prediction": "tab:blue", "label": "tab:green"}
    for i, (attr, ylabel, title) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for target, m in methods.items():
            points = getattr(m, attr).points()
            if not points:
                continue
            epochs, means, stds, ns = zip(*points, strict=True)
            colour = colours.get(target)
            ax.plot(epochs, means, color=colour, marker="o" if len(epochs) < 20 else None,
                    label=f"{target} (n={max(ns)})")
            ax.fill_between(epochs, [a - s for a, s in zip(means, stds, strict=True)],
                            [a + s for a, s in zip(means, stds, strict=True)],
                            color=colour, alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} (mean ± 1 std over seeds)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_study_csv(methods: dict[str, Method], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "figure", "epoch", "mean", "std", "n"])
        for target, m in methods.items():
            for name, curve in (("val_loss", m.loss), ("consistency_energy", m.energy)):
                for epoch, mean, std, n in curve.points():
                    writer.writerow([target, name, epoch, mean, std, n])


def write_study(sweep_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """study.md, study.csv (the per-epoch curves) and consistency_study.png."""
    methods = load_study(sweep_dir)
    out_dir = Path(out_dir or sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out_dir / "study.md", "csv": out_dir / "study.csv",
               "plot": out_dir / "consistency_study.png"}
    written["markdown"].write_text(study_markdown(methods))
    write_study_csv(methods, written["csv"])
    write_study_plot(methods, written["plot"])
    return written


# ---- ablation study -------------------------------------------------------------------------

@dataclass
class Arm:
    """The finished jobs of one ablation arm."""

    arm: str
    part: str
    label: str
    values: list[dict[str, float]] = field(default_factory=list)
    unfinished: int = 0

    def stats(self, metric: str) -> tuple[float, float, int] | None:
        return mean_se(v.get(metric) for v in self.values)


def _job_values(job: _Job, last_k: int) -> dict[str, float]:
    if last_k <= 0:
        return {k: float(v) for k, v in job.summary.get("best", {}).items()}
    try:
        return last_k_mean(job.summary.get("history", []), last_k)
    except ValueError as exc:
        raise SeedStudyError(f"{job.directory}: {exc}") from exc


def load_ablation(sweep_dir: Path, last_k: int = 0) -> list[Arm]:
    """Every arm found under `sweep_dir`, in the study's order (full method first)."""
    arms: dict[str, Arm] = {}
    for job in _jobs(sweep_dir):
        spec = job.config.get("seed_ablation")
        if spec is None:
            continue
        arm = arms.setdefault(str(spec.name), Arm(str(spec.name), str(spec.part), str(spec.label)))
        if job.summary is None:
            arm.unfinished += 1
        else:
            arm.values.append(_job_values(job, last_k))
    if not arms:
        raise SeedStudyError(f"no seed-ablation jobs under {sweep_dir}: run "
                             "sweeps/seed_ablation.yaml and report its sweep dir")
    order = {name: i for i, name in enumerate(ARM_ORDER)}
    return sorted(arms.values(), key=lambda a: order.get(a.arm, len(order)))


def ablation_markdown(arms: list[Arm], last_k: int = 0) -> str:
    """One row per arm: part, what it changes, n, each metric's mean ± standard error, and
    the difference of its mean to the full method's (arm - full; lower errors and higher
    mIoU / pixel accuracy are better)."""
    full = next((a for a in arms if a.arm == FULL_ARM), None)
    source = f"the mean of each job's last {last_k} epochs" if last_k else "each job's best epoch"
    lines = ["## Ablation study", "",
             f"Mean ± standard error over the seeds of {source} on val; Δ = arm - full method "
             "(difference of means" + ("" if full else "; no full-method job found") + ").", ""]
    head = ["part", "arm", "n"]
    for title, *_ in ABLATION_COLUMNS:
        head += [title, f"Δ {title}"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in arms:
        n = str(len(arm.values)) + (f" ({arm.unfinished} unfinished)" if arm.unfinished else "")
        cells = [arm.part, f"{arm.label} (`{arm.arm}`)", n]
        for _, metric, factor, decimals in ABLATION_COLUMNS:
            stats = arm.stats(f"val/{metric}")
            cells.append(_pm(stats, factor, decimals))
            base = full.stats(f"val/{metric}") if full is not None else None
            if stats is None or base is None or arm is full:
                cells.append("")
            else:
                cells.append(f"{factor * (stats[0] - base[0]):+.{decimals}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_ablation(sweep_dir: Path, last_k: int = 0,
                   out_dir: Path | None = None) -> dict[str, Path]:
    """ablation.md and ablation.csv (every arm's mean of every val metric)."""
    arms = load_ablation(sweep_dir, last_k)
    out_dir = Path(out_dir or sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out_dir / "ablation.md", "csv": out_dir / "ablation.csv"}
    written["markdown"].write_text(ablation_markdown(arms, last_k))
    names = sorted({k for a in arms for v in a.values for k in v if k.startswith("val/")})
    with open(written["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arm", "part", "label", "n", *names])
        for a in arms:
            means = [(s[0] if (s := a.stats(k)) is not None else "") for k in names]
            writer.writerow([a.arm, a.part, a.label, len(a.values), *means])
    return written
