"""Mean, standard error and count of a metric over the jobs that repeat one setting."""

from __future__ import annotations

import math
from collections.abc import Iterable


def mean_se(values: Iterable[float]) -> tuple[float, float, int] | None:
    """(mean, standard error of the mean, n) of the finite values, None when there are none;
    the standard error is NaN for a single value (no spread to estimate)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, math.nan, 1
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var / len(xs)), len(xs)


def last_k_mean(history: list[dict[str, float]], k: int) -> dict[str, float]:
    """Each val/* metric averaged over the last `k` validated epochs of a job's history
    (metrics missing from one of those epochs are left out)."""
    validated = [h for h in history if any(key.startswith("val/") for key in h)]
    tail = validated[-k:]
    if len(tail) < k:
        raise ValueError(f"{len(validated)} validated epochs, fewer than last-k {k}")
    names = {key for h in tail for key in h if key.startswith("val/")}
    return {key: sum(float(h[key]) for h in tail) / k for key in names
            if all(key in h for h in tail)}
