"""Every row of both benchmark sweeps (sweeps/bench_mtan.yaml, bench_libmtl.yaml) trains one
step with its protocol's settings (shrunk) on a generated Cityscapes tree, the rows whose code
paths depend on the task count (the single-task networks, a loss-based and two gradient-based
weightings, our method with its four edges) also on a generated NYUv2 tree with three tasks,
and the benchmark report reads every row back. (Every row on both settings would double the
jobs for no new code path: a weighting sees the task losses and their gradients, whatever
their number.)"""

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

from xtask_mt.reports.benchmark import build_tables, load_rows, markdown

pytestmark = pytest.mark.slow

# one train and one val batch per job (2 frames per split at batch 2), no checkpoint kept,
# a ResNet-18 trunk for DeepLabV3+ (SegNet-MTAN has one size)
SHRUNK = ["dataset.height=32", "dataset.width=64", "dataset.batch_size=2",
          "dataset.num_workers=0", "trainer.epochs=1", "trainer.seed=0", "trainer.device=cpu",
          "trainer.progress_bar=false", "trainer.keep_checkpoints=none", "encoder=resnet18",
          "encoder.pretrained=false", "extras.print_config=false"]


def _params(name: str) -> dict[str, list[str]]:
    params = yaml.safe_load((ROOT / "sweeps" / f"{name}.yaml").read_text())
    return {key: [v.strip() for v in str(values).split(",")]
            for key, values in params["hydra"]["sweeper"]["params"].items()}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("data")
    write_cityscapes(data / "cityscapes", "train", frames=2, height=64, width=128)
    write_cityscapes(data / "cityscapes", "val", frames=2, height=64, width=128, seed=1)
    for split, seed in (("train", 0), ("val", 1)):
        write_nyuv2(data / "nyu", split, frames=2, height=48, width=64, seed=seed, normals=True)
    return data


THREE_TASK_ROWS = ["stl", "fixed", "pcgrad", "mgda_ub", "ours"]


def _run(name: str, sweep: Path, data_dir: Path, *overrides: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1",
           "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "train.py", "-cd", "sweeps", "-cn", name,
                           f"paths.data_dir={data_dir}", *SHRUNK, *overrides,
                           f"hydra.sweep.dir={sweep}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("protocol", ["mtan", "libmtl"])
def test_every_row_of_the_benchmark_sweep_trains_and_reports(protocol, data_dir, tmp_path):
    name = f"bench_{protocol}"
    params = _params(name)
    assert params["bench"] == [f"{protocol}/nyuv2", f"{protocol}/cityscapes"]
    assert set(THREE_TASK_ROWS) <= set(params["bench_row"])
    sweep = tmp_path / "sweep"
    _run(name, sweep, data_dir, f"bench={protocol}/cityscapes")
    _run(name, sweep, data_dir, f"bench={protocol}/nyuv2",
         f"bench_row={','.join(THREE_TASK_ROWS)}")
    expected = {("cityscapes", row) for row in params["bench_row"]} | {
        ("nyuv2", row) for row in THREE_TASK_ROWS}
    for setting, row in expected:
        job = sweep / setting / row / "seed0"
        status = json.loads((job / "job.json").read_text())
        assert status["status"] == "finished", (setting, row, status)
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert config["bench"] == {"name": f"{protocol}/{setting}", "protocol": protocol,
                                   "setting": setting}
        assert config["bench_row"] == {"name": row}
    rows = load_rows(sweep, protocol)
    assert {(r.setting, r.row) for r in rows if r.figures} == expected
    text = markdown(build_tables(rows, protocol))
    assert "| Ours (consistency) | 1 |" in text and "| STL | 1 |" in text
    nyu = next(r for r in rows if r.setting == "nyuv2" and r.row == "stl")
    assert len(nyu.figures[0]) == 9  # three tasks' metrics from the one STL job
