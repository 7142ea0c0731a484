"""The Pareto front of a multi-objective sweep (hparams_search=optuna_pareto, or any sweep and
two or more metrics): the jobs no other job beats on every objective at once.

Each job counts with its best checkpoint's values (what metrics.json "best" holds and what a
multi-objective trial returns to Optuna), so every point on the front is a model that was kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from xtask_mt.tasks import higher_is_better


class HasBest(Protocol):
    job: str
    best: dict[str, float]


def _values(job: HasBest, objectives: Sequence[str]) -> tuple[float, ...] | None:
    values = tuple(job.best.get(m, math.nan) for m in objectives)
    return None if any(math.isnan(v) for v in values) else values


def _dominates(a: Sequence[float], b: Sequence[float], signs: Sequence[float]) -> bool:
    """a is at least as good as b on every objective and better on one (signs: +1 where
    higher is better, -1 where lower is)."""
    pairs = [(s * x, s * y) for x, y, s in zip(a, b, signs, strict=True)]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def pareto_front(jobs: Sequence[HasBest], objectives: Sequence[str]) -> list[HasBest]:
    """The non-dominated jobs among those that report every objective, ordered by the first
    objective (best first)."""
    signs = [1.0 if higher_is_better(m) else -1.0 for m in objectives]
    scored = [(j, v) for j in jobs if (v := _values(j, objectives)) is not None]
    front = [(j, v) for j, v in scored
             if not any(_dominates(w, v, signs) for _, w in scored)]
    front.sort(key=lambda item: -signs[0] * item[1][0])
    return [j for j, _ in front]


def pareto_markdown(jobs: Sequence[HasBest], objectives: Sequence[str],
                    overrides: dict[str, str]) -> str:
    """A Markdown section: the front's jobs, their objective values and varying overrides."""
    front = pareto_front(jobs, objectives)
    scored = sum(_values(j, objectives) is not None for j in jobs)
    aims = ", ".join(f"{m} ({'max' if higher_is_better(m) else 'min'})" for m in objectives)
    lines = [f"## Pareto front over {aims}", "",
             f"{len(front)} of {scored} jobs with every objective are on the front (no other "
             "job is at least as good on every objective and better on one); values at each "
             "job's best checkpoint.", "",
             "| job | " + " | ".join(f"best {m}" for m in objectives) + " | overrides |",
             "|" + "---|" * (len(objectives) + 2)]
    lines += [f"| {j.job} | " + " | ".join(f"{j.best[m]:.4f}" for m in objectives)
              + f" | {overrides.get(j.job, '')} |" for j in front]
    return "\n".join(lines) + "\n"


def write_pareto_plot(jobs: Sequence[HasBest], objectives: Sequence[str], path: Path) -> bool:
    """PNG: every job on the first two objectives, the front ringed and joined; False with
    fewer than two jobs that report them."""
    x_name, y_name = objectives[0], objectives[1]
    scored = [(j, v) for j in jobs if (v := _values(j, (x_name, y_name))) is not None]
    if len(scored) < 2:
        return False
    from matplotlib.figure import Figure

    front = pareto_front([j for j, _ in scored], objectives)
    on_front = {id(j) for j in front}
    fig = Figure(figsize=(6.5, 5))
    ax = fig.add_subplot()
    others = [v for j, v in scored if id(j) not in on_front]
    if others:
        ax.scatter(*zip(*others, strict=True), s=40, color="#9e9e9e", label="dominated")
    points = [(j.best[x_name], j.best[y_name]) for j in front]
    ax.plot(*zip(*sorted(points), strict=True), color="tab:red", linewidth=1)
    ax.scatter(*zip(*points, strict=True), s=70, color="tab:red", edgecolors="black",
               label=f"Pareto front ({len(front)})", zorder=3)
    for j, (x, y) in zip(front, points, strict=True):
        ax.annotate(j.job, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7)
    ax.set_xlabel(f"best {x_name} ({'higher' if higher_is_better(x_name) else 'lower'} "
                  "is better)")
    ax.set_ylabel(f"best {y_name} ({'higher' if higher_is_better(y_name) else 'lower'} "
                  "is better)")
    ax.set_title(f"{len(scored)} jobs: {x_name} against {y_name}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True
