"""The sweep report from job folders as train.py leaves them (no training, no W&B)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from xtask_mt.reports.sweep import load_sweep, main, sort_jobs, write_report


def make_job(sweep: Path, num: int, alpha: float, gamma: float, miou: float | None,
             status: str | None = "finished", error: str = "") -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    overrides = ["encoder=resnet18", f"loss.alpha={alpha}", f"loss.gamma={gamma}"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(
        yaml.safe_dump({"loss": {"alpha": alpha, "gamma": gamma}}))
    if status is not None:
        record = {"status": status, "overrides": overrides, **({"error": error} if error else {})}
        (job / "job.json").write_text(json.dumps(record))
    if miou is not None:
        metrics = {"val/miou": miou, "val/abs_err": 1 - miou}
        (job / "metrics.json").write_text(json.dumps(
            {"final": {k: v - 0.01 for k, v in metrics.items()}, "best": metrics,
             "best_epoch": 3}))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    make_job(tmp_path, 0, 0.0, 0.0, 0.30)
    make_job(tmp_path, 1, 0.0, 0.1, 0.50)
    make_job(tmp_path, 2, 0.1, 0.0, None, status="failed", error="KeyError: 'val/nope'")
    make_job(tmp_path, 3, 0.1, 0.1, 0.40)
    make_job(tmp_path, 10, 0.01, 0.1, None, status=None)  # still running or killed
    return tmp_path


def test_jobs_statuses_and_order(sweep: Path) -> None:
    jobs = load_sweep(sweep)
    assert [j.job for j in jobs] == ["0", "1", "2", "3", "10"]
    assert {j.job: j.status for j in jobs} == {"0": "finished", "1": "finished", "2": "failed",
                                              "3": "finished", "10": "incomplete"}
    assert [j.job for j in sort_jobs(jobs, "val/miou")] == ["1", "3", "0", "2", "10"]
    # an error metric sorts ascending: lower abs_err (= higher miou here) first
    assert [j.job for j in sort_jobs(jobs, "val/abs_err")][:3] == ["1", "3", "0"]


def test_report_files(sweep: Path) -> None:
    written = write_report(sweep, "val/miou")
    md = written["markdown"].read_text()
    assert "Shared overrides: encoder=resnet18." in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith("| 1 | loss.alpha=0.0 loss.gamma=0.1 | finished | 3 | 0.5000 |")
    assert "| failed |" in rows[3] and "KeyError: 'val/nope'" in rows[3]
    assert "| incomplete |" in rows[4]

    with open(written["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [r["job"] for r in table] == ["1", "3", "0", "2", "10"]
    assert float(table[0]["best val/miou"]) == 0.5
    assert float(table[0]["final val/miou"]) == pytest.approx(0.49)

    png = written["heatmap"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_no_heatmap_without_both_weights(tmp_path: Path) -> None:
    make_job(tmp_path, 0, 0.0, 0.01, 0.3)
    make_job(tmp_path, 1, 0.1, 0.01, 0.4)
    assert "heatmap" not in write_report(tmp_path)


def test_cli_errors_clearly(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert "no jobs under" in capsys.readouterr().err


def test_the_table_shows_the_headline_metrics_of_the_tasks_the_jobs_have():
    from xtask_mt.reports.sweep import JobRecord, markdown_table

    two = {"val/miou": 0.5, "val/pixacc": 0.9, "val/abs_err": 0.2, "val/abs_rel": 0.3}
    three = {**two, "val/normal_mean": 21.0, "val/normal_median": 11.0,
             "val/normal_within_11": 0.5, "val/normal_within_22": 0.7,
             "val/normal_within_30": 0.8}
    header = markdown_table([JobRecord("0", "finished", best=two, final=two)],
                            "val/miou").splitlines()[2]
    assert "best val/abs_rel" in header and "normal" not in header
    header = markdown_table([JobRecord("0", "finished", best=two, final=two),
                             JobRecord("1", "finished", best=three, final=three)],
                            "val/miou").splitlines()[2]
    assert "best val/normal_median" in header and "final val/normal_within_30" in header


def test_delta_m_compares_nine_metrics_for_three_tasks_with_their_directions():
    from xtask_mt.reports.delta_m import headline_metrics

    metrics = headline_metrics(("seg", "depth", "normal"))
    assert len(metrics) == 9
    assert metrics["miou"] == 1 and metrics["abs_rel"] == -1
    assert metrics["normal_median"] == -1 and metrics["normal_within_22"] == 1
