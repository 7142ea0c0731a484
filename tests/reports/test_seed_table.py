"""The seed-table report: rows grouped over seeds (mean, standard error, n), both mIoU
conventions, Delta_m against a named single-task group, the published figures beside."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from xtask_mt.reports.seed_table import SeedTableError, load_rows, markdown, write_seed_table
from xtask_mt.reports.sweep import main


def _job(sweep, row, seed, tasks, best, table="cityscapes", history=None):
    job = sweep / row / f"seed{seed}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"seed_table={table}/{row}", f"trainer.seed={seed}"]))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"seed_table": {"table": table, "row": row}, "model": {"tasks": tasks}}))
    if best is not None:
        (job / "metrics.json").write_text(json.dumps({
            "best": {f"val/{k}": v for k, v in best.items()},
            "history": history or [{f"val/{k}": v for k, v in best.items()}]}))


SEG = {"miou": 0.5, "miou_legacy": 0.52, "pixacc": 0.9, "pixacc_legacy": 0.91}
DEPTH = {"abs_err": 0.02, "abs_rel": 0.3}


@pytest.fixture
def sweep(tmp_path):
    _job(tmp_path, "stl_seg", 0, ["seg"], SEG)
    _job(tmp_path, "stl_depth", 0, ["depth"], DEPTH)
    # two seeds of MTAN: mIoU 0.55 and 0.65 -> mean 0.60, SE = 0.05
    _job(tmp_path, "mtan", 0, ["seg", "depth"], {**SEG, "miou": 0.55, **DEPTH})
    _job(tmp_path, "mtan", 1, ["seg", "depth"], {**SEG, "miou": 0.65, **DEPTH})
    _job(tmp_path, "ours", 0, ["seg", "depth"], None)  # still running
    return tmp_path


def test_rows_group_the_seeds_with_mean_standard_error_and_n(sweep):
    rows = {r.row: r for r in load_rows(sweep)}
    mean, se, n = rows["mtan"].stats("miou")
    assert (mean, n) == (pytest.approx(0.60), 2)
    assert se == pytest.approx(0.05)
    assert math.isnan(rows["stl_seg"].stats("miou")[1])  # one seed: no error
    assert rows["ours"].values == [] and rows["ours"].unfinished == 1
    assert [r.row for r in load_rows(sweep)] == ["stl_seg", "stl_depth", "mtan", "ours"]


def test_table_shows_both_conventions_delta_m_and_the_published_figures(sweep):
    text = markdown(load_rows(sweep))
    line = next(x for x in text.splitlines() if x.startswith("| MTAN |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "2"
    assert cells[2] == "52.00 ± 0.00"            # per-image mIoU, in %
    assert cells[3] == "60.00 ± 5.00"            # dataset mIoU
    assert cells[7] == "30.00 ± 0.00"            # Cityscapes Abs Rel x100, as the seed
    # Delta_m: mIoU +20 %, the other three metrics 0 -> +5.00
    assert cells[8] == "+5.00"
    assert cells[9:] == ["53.04", "91.11", "0.0144", "33.63"]
    assert "| Ours | 0 (+1 unfinished) |" in text


def test_last_k_averages_each_jobs_last_epochs(tmp_path):
    history = [{"val/miou": 0.1}, {"val/miou": 0.3}, {"val/miou": 0.5}]
    _job(tmp_path, "stl_seg", 0, ["seg"], {"miou": 0.5}, history=history)
    (row,) = load_rows(tmp_path, last_k=2)
    assert row.stats("miou")[0] == pytest.approx(0.4)
    with pytest.raises(SeedTableError, match="fewer than last-k 4"):
        load_rows(tmp_path, last_k=4)


def test_unknown_baseline_group_and_sweeps_without_rows_are_refused(sweep, tmp_path, capsys):
    with pytest.raises(SeedTableError, match=r"it has \['stl'\]"):
        write_seed_table(sweep, baseline="mtan_stl")
    empty = tmp_path / "other"
    (empty / "0" / ".hydra").mkdir(parents=True)
    (empty / "0" / ".hydra" / "overrides.yaml").write_text("[]")
    assert main([str(empty), "--table", "seed"]) == 2
    assert "no seed-table jobs" in capsys.readouterr().err


def test_cli_writes_markdown_and_a_long_csv(sweep, capsys):
    assert main([str(sweep), "--table", "seed"]) == 0
    assert "## Cityscapes (7 classes, 2 tasks)" in capsys.readouterr().out
    with (sweep / "seed_table.csv").open() as f:
        lines = list(csv.DictReader(f))
    mtan = {x["metric"]: x for x in lines if x["row"] == "mtan"}
    assert float(mtan["miou"]["mean"]) == pytest.approx(0.6)
    assert int(mtan["miou"]["n"]) == 2
