"""Every row of both seed-table sweeps trains one epoch with its sweep's settings (shrunk) on
a generated dataset tree, KD4MTL finds its teachers in the same sweep, and the report reads
the tables back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.config import ROOT
from helpers.layouts import write_cityscapes, write_nyuv2

from xtask_mt.reports.seed_table import load_rows, markdown

pytestmark = pytest.mark.slow

# model.decoder_width narrows the ResNet U-Net rows' decoders (the MTAN and AdaMT-Net rows
# have no such setting and keep theirs)
SHRUNK = ["dataset.height=32", "dataset.width=64", "dataset.batch_size=2",
          "dataset.num_workers=0", "trainer.epochs=1", "trainer.seed=0", "trainer.device=cpu",
          "trainer.progress_bar=false", "encoder=resnet18", "model.decoder_width=16"]


def _sweep_rows(name: str) -> list[str]:
    params = yaml.safe_load((ROOT / "sweeps" / f"{name}.yaml").read_text())
    return [r.strip() for r in params["hydra"]["sweeper"]["params"]["seed_table"].split(",")]


def _run_sweep(name: str, sweep: Path, data: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1",
           "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "train.py", "-cd", "sweeps", "-cn", name,
                           f"dataset.root={data}", *SHRUNK, f"hydra.sweep.dir={sweep}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]


def _check_every_row_finished(name: str, sweep: Path) -> list:
    rows = _sweep_rows(name)
    for row in rows:
        job = sweep / row.split("/")[1] / "seed0"
        status = json.loads((job / "job.json").read_text())
        assert status["status"] == "finished", (row, status)
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert f"seed_table={row}" in status["overrides"]
        assert config["trainer"]["epochs"] == 1
    return load_rows(sweep)


def test_every_cityscapes_row_trains_on_a_generated_tree(tmp_path):
    data = tmp_path / "cityscapes"
    write_cityscapes(data, "train", frames=2, height=64, width=128)
    write_cityscapes(data, "val", frames=2, height=64, width=128, seed=1)
    sweep = tmp_path / "sweep"
    _run_sweep("seed_table_cityscapes", sweep, data)
    rows = _check_every_row_finished("seed_table_cityscapes", sweep)
    assert {r.row for r in rows} == {"stl_seg", "stl_depth", "mtan_stl_seg", "mtan_stl_depth",
                                     "mtan", "pcgrad", "kd4mtl", "adamtnet", "ours"}
    # a sweep keeps each finished job's best weights only (trainer.keep_checkpoints=auto)
    assert [p.name for p in (sweep / "mtan" / "seed0" / "checkpoints").iterdir()] == ["best.pt"]
    kd = json.loads((sweep / "kd4mtl" / "seed0" / "metrics.json").read_text())
    assert kd["train"]["loss_kd_seg"] > 0 and kd["train"]["loss_kd_depth"] > 0
    text = markdown(rows)
    for name in ("MTAN", "KD4MTL", "PCGrad", "AdaMT-Net", "Ours"):
        line = next(x for x in text.splitlines() if x.startswith(f"| {name} |"))
        assert "| 1 |" in line and line.count("±") == 0  # one seed, no error bar


def test_every_nyuv2_row_trains_on_a_generated_tree(tmp_path):
    data = tmp_path / "nyu"
    for split, seed in (("train", 0), ("val", 1)):
        write_nyuv2(data, split, frames=2, height=48, width=64, seed=seed, normals=True)
    sweep = tmp_path / "sweep"
    _run_sweep("seed_table_nyuv2", sweep, data)
    rows = _check_every_row_finished("seed_table_nyuv2", sweep)
    tables = {r.row: r.table for r in rows}
    assert tables["mtan_3task"] == "nyuv2_3task" and tables["mtan"] == "nyuv2"
    three = next(r for r in rows if r.row == "kd4mtl_3task")
    assert three.tasks == ("seg", "depth", "normal")
    assert "normal_mean" in three.values[0]
    assert "## NYUv2 (13 classes, 3 tasks: reference rows)" in markdown(rows)
