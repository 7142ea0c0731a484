"""The Pareto front of a multi-objective sweep, and the report section and plot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from xtask_mt.reports.pareto import pareto_front, pareto_markdown, write_pareto_plot
from xtask_mt.reports.sweep import SweepReportError, write_report

BOTH = ("val/miou", "val/abs_err")  # maximised, minimised


@dataclass
class Job:
    job: str
    best: dict[str, float] = field(default_factory=dict)


def _jobs(points: dict[str, tuple[float, float]]) -> list[Job]:
    return [Job(name, {"val/miou": m, "val/abs_err": e}) for name, (m, e) in points.items()]


def test_the_front_holds_exactly_the_jobs_no_other_job_beats_on_both() -> None:
    jobs = _jobs({"a": (0.5, 0.30), "b": (0.6, 0.40), "c": (0.4, 0.20),
                  "d": (0.5, 0.35),   # beaten by a (same miou, higher error)
                  "e": (0.3, 0.50),   # beaten by everyone
                  "f": (0.6, 0.40)})  # ties b exactly: neither dominates the other
    front = [j.job for j in pareto_front(jobs, BOTH)]
    assert front == ["b", "f", "a", "c"]  # ordered by miou, best first


def test_directions_come_from_the_metrics() -> None:
    jobs = _jobs({"a": (0.5, 0.3), "b": (0.6, 0.4)})
    assert [j.job for j in pareto_front(jobs, ("val/miou", "val/abs_err"))] == ["b", "a"]
    # both maximised-looking only if both are higher-is-better: pixacc with miou
    for j, pix in zip(jobs, (0.7, 0.8), strict=True):
        j.best["val/pixacc"] = pix
    assert [j.job for j in pareto_front(jobs, ("val/miou", "val/pixacc"))] == ["b"]


def test_jobs_without_every_objective_are_left_out() -> None:
    jobs = _jobs({"a": (0.5, 0.3), "b": (0.9, float("nan"))}) + [Job("c", {"val/miou": 1.0})]
    assert [j.job for j in pareto_front(jobs, BOTH)] == ["a"]
    text = pareto_markdown(jobs, BOTH, {"a": "loss.alpha=0.1"})
    assert "1 of 1 jobs" in text and "| a | 0.5000 | 0.3000 | loss.alpha=0.1 |" in text


def test_plot_needs_two_scored_jobs(tmp_path: Path) -> None:
    assert not write_pareto_plot(_jobs({"a": (0.5, 0.3)}), BOTH, tmp_path / "one.png")
    path = tmp_path / "front.png"
    assert write_pareto_plot(_jobs({"a": (0.5, 0.3), "b": (0.4, 0.4)}), BOTH, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _sweep(tmp_path: Path, points: dict[str, tuple[float, float]],
           objectives: list[str] | None) -> Path:
    for name, (miou, err) in points.items():
        job = tmp_path / name
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"loss.alpha={miou}"]))
        config = {"loss": {"alpha": miou, "gamma": 0.0}}
        if objectives:
            config["search"] = {"objectives": objectives}
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        best = {"val/miou": miou, "val/abs_err": err}
        (job / "metrics.json").write_text(json.dumps({"best": best, "final": best,
                                                      "best_epoch": 1}))
    return tmp_path


def test_report_reads_the_objectives_from_the_sweep(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path, {"0": (0.5, 0.3), "1": (0.6, 0.4), "2": (0.4, 0.5)},
                   ["val/miou", "val/abs_err"])
    written = write_report(sweep)
    text = written["markdown"].read_text()
    section = text[text.index("## Pareto front"):]
    assert "| 1 |" in section and "| 0 |" in section and "| 2 |" not in section
    assert written["pareto"].name == "pareto_val_miou_val_abs_err.png"


def test_report_without_objectives_has_no_front_unless_asked(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path, {"0": (0.5, 0.3), "1": (0.6, 0.4)}, None)
    written = write_report(sweep)
    assert "pareto" not in written and "Pareto" not in written["markdown"].read_text()
    written = write_report(sweep, objectives=("val/miou", "val/abs_err"))
    assert "pareto" in written
    with pytest.raises(SweepReportError, match="val/miuo"):
        write_report(sweep, objectives=("val/miou", "val/miuo"))
    with pytest.raises(SweepReportError, match="two or more"):
        write_report(sweep, objectives=("val/miou",))
