"""Delta_m on hand-made evaluation files against a value worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xtask_mt.reports.delta_m import DeltaMError, delta_m, merge_baselines, read_eval_metrics


def _write_eval(run: Path, split: str, metrics: dict[str, float]) -> Path:
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics.json").write_text(json.dumps(
        {"split": split, "metrics": {f"{split}/{k}": v for k, v in metrics.items()}}))
    return run


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    return {
        "mtl": _write_eval(tmp_path / "mtl", "test", {"miou": 0.55, "pixacc": 0.90,
                                                      "abs_err": 0.020, "abs_rel": 0.25}),
        "seg": _write_eval(tmp_path / "seg", "test", {"miou": 0.50, "pixacc": 0.92}),
        "depth": _write_eval(tmp_path / "depth", "test", {"abs_err": 0.025, "abs_rel": 0.20}),
    }


def test_delta_m_equals_the_hand_worked_value(runs):
    _, multi = read_eval_metrics(runs["mtl"])
    baselines = merge_baselines({name: read_eval_metrics(runs[name])[1]
                                 for name in ("seg", "depth")})
    value, per_metric = delta_m(multi, baselines)
    # by hand, in %: mIoU +(0.55-0.50)/0.50 = +10; pixacc +(0.90-0.92)/0.92 = -50/23;
    # abs err -(0.020-0.025)/0.025 = +20; abs rel -(0.25-0.20)/0.20 = -25
    # Delta_m = (10 - 50/23 + 20 - 25) / 4 = 65/92 = +0.7065... (better than single-task)
    assert value == pytest.approx(65 / 92, rel=1e-12)
    assert per_metric == pytest.approx({"miou": 10.0, "pixacc": -50 / 23, "abs_err": 20.0,
                                        "abs_rel": -25.0})


def test_a_worse_multi_task_run_gets_a_negative_delta_m():
    value, _ = delta_m({"miou": 0.45, "abs_err": 0.03}, {"miou": 0.50, "abs_err": 0.025},
                       metrics={"miou": 1, "abs_err": -1})
    assert value == pytest.approx((-10.0 - 20.0) / 2)


def test_missing_metric_ambiguous_baselines_and_unevaluated_runs_are_refused(runs, tmp_path):
    with pytest.raises(DeltaMError, match="'abs_err' is missing from the baselines"):
        delta_m(read_eval_metrics(runs["mtl"])[1], read_eval_metrics(runs["seg"])[1])
    with pytest.raises(DeltaMError, match="'miou' is given by two baselines"):
        merge_baselines({"a": {"miou": 0.5}, "b": {"miou": 0.4}})
    with pytest.raises(DeltaMError, match="evaluate the baseline first"):
        read_eval_metrics(tmp_path / "never_evaluated")
