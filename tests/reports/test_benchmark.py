"""The benchmark report on a small synthetic sweep (2 seeds, 3 rows, 12 validated epochs
each, metrics.json written here): last-10 means, Delta_m / Delta_p against a given base, the
best-on-val epoch, mean ranks, and the published rows beside ours, each checked against a
computation by hand on the same histories."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from xtask_mt.reports.benchmark import build_tables, load_rows, markdown, published_base
from xtask_mt.reports.sweep import main

EPOCHS = 12
# per row: mIoU at epoch 0, abs err, abs rel at epoch 0 (Cityscapes, our units)
ROWS = {"stl": (0.72, 0.0125, 0.29), "fixed": (0.70, 0.0120, 0.30),
        "pcgrad": (0.75, 0.0130, 0.28)}


def _history(row: str, seed: int) -> list[dict[str, float]]:
    m0, abs_err, rel0 = ROWS[row]
    return [{"epoch": e, "val/miou": m0 + 0.001 * e + 0.002 * seed, "val/pixacc": 0.9,
             "val/abs_err": abs_err + 0.0001 * seed, "val/abs_rel": rel0 - 0.001 * e,
             "train/total": 1.0} for e in range(1, EPOCHS + 1)]


def _job(sweep, protocol, setting, row, seed, history):
    job = sweep / setting / row / f"seed{seed}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
        [f"bench={protocol}/{setting}", f"bench_row={row}", f"trainer.seed={seed}"]))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"bench": {"name": f"{protocol}/{setting}", "protocol": protocol, "setting": setting},
         "bench_row": {"name": row},
         "model": {"tasks": ["seg", "depth"]}}))
    if history is not None:
        (job / "metrics.json").write_text(json.dumps({"history": history}))


@pytest.fixture
def mtan_sweep(tmp_path):
    for row in ROWS:
        for seed in (0, 1):
            _job(tmp_path, "mtan", "cityscapes", row, seed, _history(row, seed))
    _job(tmp_path, "mtan", "cityscapes", "ours", 0, None)  # still running
    return tmp_path


def _last10(row: str, seed: int) -> dict[str, float]:
    """By hand: epochs 3..12 average to epoch 7.5; papers' units (%; Rel Err x100)."""
    m0, abs_err, rel0 = ROWS[row]
    return {"miou": 100 * (m0 + 0.0075 + 0.002 * seed), "pixacc": 90.0,
            "abs_err": abs_err + 0.0001 * seed, "abs_rel": 100 * (rel0 - 0.0075)}


def _delta_m_by_hand(v: dict[str, float], b: dict[str, float]) -> float:
    return 25.0 * (-(v["miou"] - b["miou"]) / b["miou"] - (v["pixacc"] - b["pixacc"]) / b["pixacc"]
                   + (v["abs_err"] - b["abs_err"]) / b["abs_err"]
                   + (v["abs_rel"] - b["abs_rel"]) / b["abs_rel"])


def test_mtan_rows_are_last_10_epoch_means_over_seeds_with_standard_errors(mtan_sweep):
    rows = {r.row: r for r in load_rows(mtan_sweep, "mtan")}
    assert list(rows) == ["stl", "fixed", "pcgrad", "ours"]
    assert rows["ours"].figures == [] and rows["ours"].unfinished == 1
    for name in ROWS:
        assert rows[name].figures == [pytest.approx(_last10(name, s)) for s in (0, 1)]
    mean, se, n = rows["pcgrad"].stats(lambda f: f["miou"])
    assert (mean, se, n) == (pytest.approx(100 * (0.75 + 0.0075 + 0.001)), pytest.approx(0.1), 2)


def test_mtan_delta_m_against_the_published_and_our_stl_and_mean_rank_match_by_hand(
        mtan_sweep):
    table = build_tables(load_rows(mtan_sweep, "mtan"), "mtan")[0]
    published = {"miou": 74.01, "pixacc": 93.16, "abs_err": 0.0125, "abs_rel": 27.77}
    assert published_base("mtan", "cityscapes") == published
    ours_stl = {k: (_last10("stl", 0)[k] + _last10("stl", 1)[k]) / 2 for k in published}
    rows = {r.row: r for r in table.rows}
    for name in ("fixed", "pcgrad"):
        by_seed = [_delta_m_by_hand(_last10(name, s), published) for s in (0, 1)]
        mean, se, n = table.gain_vs_published(rows[name])
        assert mean == pytest.approx(sum(by_seed) / 2)
        assert se == pytest.approx(abs(by_seed[0] - by_seed[1]) / 2)
        own = [_delta_m_by_hand(_last10(name, s), ours_stl) for s in (0, 1)]
        assert table.gain_vs_own(rows[name])[0] == pytest.approx(sum(own) / 2)
    # our STL against itself: mean 0 (the seeds straddle it)
    assert table.gain_vs_own(rows["stl"])[0] == pytest.approx(0.0, abs=1e-9)
    # ranks among fixed and pcgrad: mIoU pcgrad 1 / fixed 2; Pix Acc equal (1.5 each);
    # Abs Err fixed 1 / pcgrad 2; Rel Err pcgrad 1 / fixed 2
    assert table.ranks == {"fixed": pytest.approx((2 + 1.5 + 1 + 2) / 4),
                           "pcgrad": pytest.approx((1 + 1.5 + 2 + 1) / 4)}


def test_the_mtan_table_prints_the_published_rows_beside_ours(mtan_sweep):
    text = markdown(build_tables(load_rows(mtan_sweep, "mtan"), "mtan"))
    lines = text.splitlines()
    fixed = next(i for i, x in enumerate(lines) if x.startswith("| LS | 2 |"))
    assert lines[fixed + 1].startswith("| *LS, published (Nash-MTL, ICML 2022, Table 3)* |")
    assert "| 75.18 | 93.49 | 0.01550 | 46.77 | +22.60 |" in lines[fixed + 1]
    assert any(x.startswith("| *STL, published") and "| 74.01 | 93.16 | 0.01250 | 27.77 |" in x
               for x in lines)
    assert any(x.startswith("| *FAMO, published (FAMO, NeurIPS 2023); not run*") for x in lines)
    assert "| Ours (consistency) | 0 (+1 unfinished) |" in text
    cells = [c.strip() for c in lines[fixed].strip("|").split("|")]
    assert cells[2] == "70.85 ± 0.10"   # mIoU: 100 x (0.70 + 0.0075 + 0.001), SE 0.1
    assert cells[-1] == "1.62"          # MR 1.625


@pytest.fixture
def libmtl_sweep(tmp_path):
    base = published_base("libmtl", "cityscapes")  # 69.06, 91.54, 0.01282, 43.53
    # epoch 2 beats the published base on segmentation, epoch 3 on depth; for the
    # multi-task row epoch 2 has the highest Delta_p overall
    epochs = [(0.60, 0.90, 0.0140, 0.46), (0.74, 0.93, 0.0135, 0.45),
              (0.65, 0.91, 0.0125, 0.43), (0.61, 0.90, 0.0150, 0.50)]
    history = [{"epoch": e + 1, "val/miou": m, "val/pixacc": p, "val/abs_err": a,
                "val/abs_rel": r} for e, (m, p, a, r) in enumerate(epochs)]
    for row in ("stl", "fixed"):
        _job(tmp_path, "libmtl", "cityscapes", row, 0, history)
    return tmp_path, base, epochs


def _delta_p_by_hand(v, b) -> float:
    seg = ((v[0] - b["miou"]) / b["miou"] + (v[1] - b["pixacc"]) / b["pixacc"]) / 2
    depth = (-(v[2] - b["abs_err"]) / b["abs_err"] - (v[3] - b["abs_rel"]) / b["abs_rel"]) / 2
    return 100 * (seg + depth) / 2


def test_libmtl_rows_take_the_epoch_best_on_val_and_delta_p_averages_per_task(libmtl_sweep):
    sweep, base, epochs = libmtl_sweep
    units = [(100 * m, 100 * p, a, 100 * r) for m, p, a, r in epochs]
    scores = [_delta_p_by_hand(v, base) for v in units]
    best = max(range(len(units)), key=scores.__getitem__)
    assert best == 1
    rows = {r.row: r for r in load_rows(sweep, "libmtl")}
    assert rows["fixed"].figures == [pytest.approx(dict(zip(base, units[best], strict=True)))]
    # the single-task networks: segmentation at its best epoch (2), depth at its own (3)
    assert rows["stl"].figures == [pytest.approx({"miou": 74.0, "pixacc": 93.0,
                                                  "abs_err": 0.0125, "abs_rel": 43.0})]
    table = build_tables(list(rows.values()), "libmtl")[0]
    assert table.gain_vs_published(rows["fixed"])[0] == pytest.approx(scores[best])
    text = markdown([table])
    assert "Delta_p % ↑ (published STL)" in text
    assert "| *DB-MTL, published (DB-MTL, 2023, Table 2); not run* |" in text


def test_the_cli_writes_the_table_csv_and_a_delta_plot_per_setting(mtan_sweep, capsys):
    assert main([str(mtan_sweep), "--table", "mtan"]) == 0
    printed = capsys.readouterr().out
    assert "## Nash-MTL / FAMO protocol (SegNet-MTAN): Cityscapes (7 classes, 2 tasks)" in printed
    assert (mtan_sweep / "bench_mtan_cityscapes_delta.png").stat().st_size > 0
    with (mtan_sweep / "bench_mtan.csv").open() as f:
        lines = list(csv.DictReader(f))
    rank = next(x for x in lines if x["row"] == "pcgrad" and x["quantity"] == "mean_rank")
    assert float(rank["mean"]) == pytest.approx(1.375)
    assert any(x["source"] == "published" and x["row"] == "nash_mtl" and x["quantity"] == "miou"
               and float(x["mean"]) == 75.41 for x in lines)
    assert main([str(mtan_sweep), "--table", "libmtl"]) == 2
    assert "no libmtl benchmark jobs" in capsys.readouterr().err
