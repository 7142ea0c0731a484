"""Multi-task gain Delta_m: the mean relative difference to single-task baselines.

    Delta_m = 100 / K * sum_k s_k * (M_k - B_k) / B_k

over K metrics, with M_k the multi-task figure, B_k the single-task baseline's figure for
the same metric, and s_k = +1 where higher is better (mIoU, pixel accuracy, deltas), -1 where
lower is better (depth errors). Sign convention: positive = the multi-task model is better
than the single-task models on average, negative = worse. Each metric counts once, so a task
with more metrics weighs more, as in the usual NYUv2 / Cityscapes tables.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from xtask_mt.errors import UserError
from xtask_mt.tasks import get_task, higher_is_better

SIGN_CONVENTION = "Delta_m > 0: better than the single-task baselines on average (in %)"
SEED_TASKS = ("seg", "depth")


def headline_metrics(tasks: Sequence[str] = SEED_TASKS) -> dict[str, int]:
    """The tasks' headline metrics -> +1 if higher is better, -1 if lower is better (for
    seg and depth: mIoU, pixel accuracy, abs and abs rel error)."""
    return {name: +1 if higher_is_better(name) else -1
            for task in tasks for name in get_task(task).headline_metrics}


class DeltaMError(UserError, ValueError):
    """Baselines that cannot be compared with the multi-task run."""


def delta_m(multi: Mapping[str, float], baselines: Mapping[str, float],
            metrics: Mapping[str, int] | None = None) -> tuple[float, dict[str, float]]:
    """Delta_m in % and the signed relative difference (in %) of each metric.

    `multi` and `baselines` map metric names (no split prefix) to values.
    """
    metrics = dict(metrics or headline_metrics())
    per_metric: dict[str, float] = {}
    for name, sign in metrics.items():
        if sign not in (1, -1):
            raise DeltaMError(f"metric {name!r}: direction must be +1 (higher is better) or -1, "
                              f"got {sign}")
        for label, source in (("multi-task run", multi), ("baselines", baselines)):
            if name not in source or source[name] is None or math.isnan(source[name]):
                raise DeltaMError(f"metric {name!r} is missing from the {label} "
                                  f"(has {sorted(source)})")
        base = float(baselines[name])
        if base == 0:
            raise DeltaMError(f"baseline {name} is 0; a relative difference is undefined")
        per_metric[name] = 100.0 * sign * (float(multi[name]) - base) / base
    return sum(per_metric.values()) / len(per_metric), per_metric


def read_eval_metrics(path: Path, split: str | None = None) -> tuple[str, dict[str, float]]:
    """(split, metrics without split prefix) from an evaluation file or a run dir; in a run
    dir, `eval/metrics_<split>.json` when `split` is given and present, else the latest
    `eval/metrics.json`."""
    path = Path(path)
    if path.is_dir():
        per_split = path / "eval" / f"metrics_{split}.json"
        path = per_split if split and per_split.is_file() else path / "eval" / "metrics.json"
    if not path.is_file():
        raise DeltaMError(f"{path} not found: evaluate the baseline first "
                          f"(python evaluate.py run={path.parent.parent} split=<same split>)")
    data = json.loads(path.read_text())
    split = data.get("split")
    if split is None or not isinstance(data.get("metrics"), dict):
        raise DeltaMError(f"{path} is not an evaluate.py result (needs 'split' and 'metrics')")
    prefix = f"{split}/"
    return split, {k[len(prefix):]: v for k, v in data["metrics"].items()
                   if k.startswith(prefix)}


def merge_baselines(runs: Mapping[str, Mapping[str, float]],
                    metrics: Mapping[str, int] | None = None) -> dict[str, float]:
    """One baseline figure per metric from several single-task runs (name -> metrics).

    A metric offered by two baselines is ambiguous and refused.
    """
    wanted = dict(metrics or headline_metrics())
    merged: dict[str, float] = {}
    source: dict[str, str] = {}
    for run, values in runs.items():
        for name in wanted:
            if name in values:
                if name in merged:
                    raise DeltaMError(f"metric {name!r} is given by two baselines, "
                                      f"{source[name]} and {run}; pass one run per task")
                merged[name], source[name] = float(values[name]), run
    return merged
