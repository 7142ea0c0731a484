"""The sweep report from job folders as train.py leaves them (no training, no W&B)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from xtask_mt.reports.sweep import load_sweep, main, sort_jobs, write_report


def make_job(sweep: Path, num: int, alpha: float, gamma: float, miou: float | None,
             status: str | None = "finished", error: str = "", seed: int | None = None,
             history: list[float] = ()) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    overrides = ["encoder=resnet18", f"loss.alpha={alpha}", f"loss.gamma={gamma}"]
    overrides += [f"trainer.seed={seed}"] if seed is not None else []
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
             "best_epoch": 3, "history": [{"epoch": i + 1, "val/miou": m}
                                          for i, m in enumerate(history)]}))


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


def _grouped_lines(markdown: str) -> dict[str, list[str]]:
    section = markdown.split("## Grouped over trainer.seed")[1]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in rows[1:])}


def test_jobs_that_differ_only_in_seed_are_grouped_with_mean_standard_error_and_n(tmp_path):
    make_job(tmp_path, 0, 0.0, 0.0, 0.30, seed=0)
    make_job(tmp_path, 1, 0.0, 0.0, 0.40, seed=1)
    make_job(tmp_path, 2, 0.1, 0.0, 0.60, seed=0)
    make_job(tmp_path, 3, 0.1, 0.0, None, status="failed", seed=1)
    groups = _grouped_lines(write_report(tmp_path, "val/miou",
                                         ("val/miou",))["markdown"].read_text())
    # 0.30 and 0.40: mean 0.35, SE = std(0.3, 0.4) / sqrt(2) = 0.05; the failed seed is left out
    assert groups == {"loss.alpha=0.1": ["1", "0.6000"],
                      "loss.alpha=0.0": ["2", "0.3500 ± 0.0500"]}


def test_last_k_groups_the_mean_of_each_jobs_last_epochs(tmp_path):
    make_job(tmp_path, 0, 0.0, 0.0, 0.5, seed=0, history=[0.1, 0.2, 0.4])
    make_job(tmp_path, 1, 0.0, 0.0, 0.5, seed=1, history=[0.1, 0.4, 0.6])
    text = write_report(tmp_path, "val/miou", ("val/miou",), last_k=2)["markdown"].read_text()
    assert _grouped_lines(text)["(defaults)"] == ["2", "0.4000 ± 0.1000"]
    assert main([str(tmp_path), "--last-k", "4"]) == 2


def test_an_unknown_metric_is_refused_with_the_known_ones(sweep, capsys):
    assert main([str(sweep), "--metric", "val/miuo"]) == 2
    err = capsys.readouterr().err
    assert "no job reports val/miuo" in err and "val/abs_err, val/miou" in err
    assert not (sweep / "report.md").exists()


def test_heatmap_cells_are_means_over_seeds_with_readable_labels(tmp_path):
    from xtask_mt.reports.sweep import _label_colour, alpha_gamma_grid

    for num, (a, g, m, seed) in enumerate([(0.0, 0.0, 0.2, 0), (0.0, 0.0, 0.4, 1),
                                           (0.1, 0.0, 0.5, 0), (0.0, 0.1, 0.6, 0)]):
        make_job(tmp_path, num, a, g, m, seed=seed)
    alphas, gammas, grid, counts = alpha_gamma_grid(load_sweep(tmp_path), "val/miou")
    assert grid[0][0] == pytest.approx(0.3) and counts[0][0] == 2
    assert math.isnan(grid[1][1]) and counts[1][1] == 0
    assert _label_colour((0.99, 0.91, 0.14, 1.0)) == "black"  # viridis' yellow end
    assert _label_colour((0.27, 0.00, 0.33, 1.0)) == "white"  # viridis' purple end
    assert "heatmap" in write_report(tmp_path)


def test_sampled_values_get_a_scatter_instead_of_a_grid(tmp_path):
    points = [(7.2e-05, 0.003), (0.02, 1.1e-4), (0.0011, 0.05), (0.3, 0.0009), (4e-5, 0.2)]
    for num, (a, g) in enumerate(points):
        make_job(tmp_path, num, a, g, 0.1 * (num + 1))
    written = write_report(tmp_path)
    assert "heatmap" not in written
    png = written["scatter"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_csv_reads_into_pandas_as_numbers(sweep):
    import pandas as pd

    frame = pd.read_csv(write_report(sweep)["csv"])
    assert frame["best val/miou"].dtype.kind == "f"
    assert frame.loc[frame["job"] == 1, "best val/miou"].item() == 0.5


def test_a_sweep_without_segmentation_is_sorted_by_its_own_headline_metric(tmp_path):
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["model=stl_depth"]))
    (job / "metrics.json").write_text(json.dumps({"best": {"val/abs_err": 0.2},
                                                  "final": {"val/abs_err": 0.3}}))
    text = write_report(tmp_path)["markdown"].read_text()
    assert text.startswith("Sorted by best val/abs_err (lower is better)")


def test_the_hydra_files_w_and_b_keeps_of_a_job_are_no_job(sweep: Path) -> None:
    copy = sweep / "0" / "wandb" / "offline-run-1-abc" / "files" / ".hydra"
    copy.mkdir(parents=True)
    (copy / "overrides.yaml").write_text((sweep / "0" / ".hydra" / "overrides.yaml")
                                         .read_text())
    assert sorted(r.job for r in load_sweep(sweep)) == sorted(
        p.name for p in sweep.iterdir() if (p / ".hydra").is_dir())


def test_a_job_killed_while_hydra_wrote_its_config_is_listed_as_incomplete(
        sweep: Path, capsys) -> None:
    job = sweep / "10" / ".hydra"
    (job / "config.yaml").write_text("loss:\n  alpha: 0.01\n  gamma: [0.1, ")
    (job / "overrides.yaml").write_text("- encoder=resnet18\n- 'loss.alpha=0.")
    assert main([str(sweep)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("| 10 |"))
    assert "| incomplete |" in row and "unreadable .hydra/config.yaml" in row
