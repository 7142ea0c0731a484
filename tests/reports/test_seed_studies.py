"""The seed's two studies read back from hand-made job folders: the study's per-epoch means
and bands, and the ablation's rows with their deltas to the full method."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from xtask_mt.reports.seed_studies import SeedStudyError, write_ablation, write_study
from xtask_mt.reports.sweep import main


def _job(folder: Path, config: dict, summary: dict | None) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("[]\n")
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if summary is not None:
        (folder / "metrics.json").write_text(json.dumps(summary))


def _study(sweep: Path) -> None:
    """Two methods x 3 seeds x 2 epochs; loss_seg + loss_depth and energy chosen so the
    means are 1.0 / 0.5 (prediction) and 2.0 / 0.25 (label) at epoch 2."""
    for target, loss, energy in (("prediction", 1.0, 0.5), ("label", 2.0, 0.25)):
        for seed, shift in enumerate((-0.1, 0.0, 0.1)):
            history = [{"epoch": e, "val/loss_seg": (loss + shift) / 2 + (2 - e),
                        "val/loss_depth": (loss + shift) / 2,
                        "val/consistency_energy": energy + shift, "val/miou": 0.5}
                       for e in (1, 2)]
            _job(sweep / target / f"seed{seed}",
                 {"loss": {"consistency_target": target}, "model": {"tasks": ["seg", "depth"]}},
                 {"history": history, "best": {"val/miou": 0.5 + shift, "val/abs_err": 0.1}})


def test_the_study_averages_each_epoch_over_the_seeds_with_a_band(tmp_path):
    _study(tmp_path)
    written = write_study(tmp_path)
    rows = list(csv.DictReader(written["csv"].open()))
    at = {(r["method"], r["figure"], int(r["epoch"])): r for r in rows}
    assert float(at["prediction", "val_loss", 2]["mean"]) == pytest.approx(1.0)
    assert float(at["prediction", "val_loss", 1]["mean"]) == pytest.approx(2.0)
    assert float(at["label", "consistency_energy", 2]["mean"]) == pytest.approx(0.25)
    assert float(at["label", "consistency_energy", 2]["std"]) == pytest.approx(0.1)
    assert int(at["label", "val_loss", 2]["n"]) == 3
    text = written["markdown"].read_text()
    se = 0.1 / math.sqrt(3)
    assert f"| xtsc (against the direct prediction) | 3 | 2 | 1.0000 ± {se:.4f} | 0.5000 ± " \
           in text
    assert written["plot"].read_bytes()[:4] == b"\x89PNG"


def test_an_unfinished_job_is_counted_and_an_empty_sweep_is_refused(tmp_path):
    _study(tmp_path)
    _job(tmp_path / "label" / "seed3", {"loss": {"consistency_target": "label"},
                                        "model": {"tasks": ["seg", "depth"]}}, None)
    assert "| 3 (1 unfinished) |" in write_study(tmp_path)["markdown"].read_text()
    with pytest.raises(SeedStudyError, match="no finished job"):
        write_study(tmp_path / "label" / "seed3")


def _ablation(sweep: Path) -> None:
    arms = {"full": ("all", 0.60, 0.010), "no_alpha": ("(i)", 0.55, 0.012),
            "resnet50": ("(ii)", 0.62, 0.009)}
    for arm, (part, miou, abs_err) in arms.items():
        for seed, shift in enumerate((-0.01, 0.01)):
            _job(sweep / arm / f"seed{seed}",
                 {"seed_ablation": {"name": arm, "part": part, "label": arm.replace("_", " ")}},
                 {"best": {"val/miou": miou + shift, "val/pixacc": 0.9, "val/abs_err": abs_err,
                           "val/abs_rel": 0.2},
                  "history": [{"epoch": 1, "val/miou": miou, "val/abs_err": abs_err}]})


def test_the_ablation_has_one_row_per_arm_with_its_delta_to_the_full_method(tmp_path):
    _ablation(tmp_path)
    text = write_ablation(tmp_path)["markdown"].read_text()
    rows = [r for r in text.splitlines() if r.startswith("| (") or r.startswith("| all")]
    assert [r.split("|")[2].strip() for r in rows] == [
        "full (`full`)", "no alpha (`no_alpha`)", "resnet50 (`resnet50`)"]
    no_alpha = [c.strip() for c in rows[1].strip("|").split("|")]
    assert no_alpha[3] == "55.00 ± 1.00" and no_alpha[4] == "-5.00"  # mIoU, Δ mIoU
    assert no_alpha[7] == "0.0120 ± 0.0000" and no_alpha[8] == "+0.0020"  # Abs, Δ Abs
    assert [c.strip() for c in rows[0].strip("|").split("|")][4] == ""  # no delta to itself


def test_the_report_cli_writes_both_studies(tmp_path, capsys):
    _ablation(tmp_path / "a")
    _study(tmp_path / "s")
    assert main([str(tmp_path / "a"), "--table", "ablation", "--last-k", "1"]) == 0
    assert "mean of each job's last 1 epochs" in capsys.readouterr().out
    assert main([str(tmp_path / "s"), "--table", "study"]) == 0
    assert (tmp_path / "s" / "consistency_study.png").is_file()
    assert main([str(tmp_path / "s"), "--table", "ablation"]) == 2
    assert "no seed-ablation jobs" in capsys.readouterr().err
