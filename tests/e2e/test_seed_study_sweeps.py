"""One epoch of every job of the seed's two studies (sweeps/consistency_study.yaml, one seed;
sweeps/seed_ablation.yaml, every arm, one seed) on a generated Cityscapes tree, and their
report tables read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.config import ROOT
from helpers.layouts import write_cityscapes
from torchvision import models

from xtask_mt.engine.checkpoint import load_checkpoint
from xtask_mt.reports.seed_studies import ARM_ORDER, write_ablation, write_study

pytestmark = pytest.mark.slow

SHRUNK = ["dataset.height=32", "dataset.width=64", "dataset.batch_size=2",
          "dataset.num_workers=0", "trainer.epochs=1", "trainer.seed=0", "trainer.device=cpu",
          "trainer.progress_bar=false"]


def _run_sweep(name: str, sweep: Path, data: Path, env: dict[str, str]) -> None:
    env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1",
           "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "train.py", "-cd", "sweeps", "-cn", name,
                           f"dataset.root={data}", *SHRUNK, f"hydra.sweep.dir={sweep}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]


def _finished(job: Path) -> dict:
    assert json.loads((job / "job.json").read_text())["status"] == "finished", job
    summary = json.loads((job / "metrics.json").read_text())
    row = summary["history"][0]
    energies = [v for k, v in row.items() if k.startswith("val/energy_")]
    assert len(energies) == 2
    assert row["val/consistency_energy"] == pytest.approx(sum(energies) / 2)
    return yaml.safe_load((job / ".hydra" / "config.yaml").read_text())


@pytest.fixture
def cityscapes(tmp_path: Path) -> Path:
    data = tmp_path / "cityscapes"
    write_cityscapes(data, "train", frames=2, height=64, width=128)
    write_cityscapes(data, "val", frames=2, height=64, width=128, seed=1)
    return data


def test_both_methods_of_the_consistency_study_train_and_report(tmp_path, cityscapes):
    sweep = tmp_path / "study"
    _run_sweep("consistency_study", sweep, cityscapes, {})
    for target in ("prediction", "label"):
        config = _finished(sweep / target / "seed0")
        assert config["loss"]["consistency_target"] == target
        assert config["optimizer"]["name"] == "sgd" and config["optimizer"]["momentum"] == 0
        assert config["weighting"]["name"] == "uncertainty"
    written = write_study(sweep)
    text = written["markdown"].read_text()
    assert "| xtsc (against the direct prediction) | 1 | 1 |" in text
    assert "| xtc (against the ground truth) | 1 | 1 |" in text
    assert written["plot"].stat().st_size > 0


def test_every_arm_of_the_ablation_trains_and_reports(tmp_path, cityscapes):
    # ImageNet weights for the pretrained arm, from torchvision's cache (no download)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(12345)  # not the jobs' seed, whose own initial weights would match
    weights = models.resnet34().state_dict()
    url = models.ResNet34_Weights.IMAGENET1K_V1.url
    torch.save(weights, cache / url.rsplit("/", 1)[-1])
    sweep = tmp_path / "ablation"
    _run_sweep("seed_ablation", sweep, cityscapes, {"TORCH_HOME": str(tmp_path / "torch")})
    configs = {arm: _finished(sweep / arm / "seed0") for arm in ARM_ORDER}
    assert configs["resnet101"]["encoder"]["depth"] == 101
    assert configs["no_alpha_gamma"]["loss"]["alpha"] == configs["no_alpha_gamma"]["loss"][
        "gamma"] == 0  # the saved config keeps the edges' weights as ${loss.alpha}, ...
    assert configs["no_smoothing_no_uncertainty"]["weighting"]["name"] == "fixed"
    assert configs["full"]["loss"]["label_smoothing"] == 0.1
    assert configs["full"]["loss"]["label_smoothing_rule"] == "seed"
    # a sweep keeps the best weights; the pretrained arm's encoder started from the file's
    for arm, near in (("pretrained", True), ("full", False)):
        state = load_checkpoint(sweep / arm / "seed0" / "checkpoints" / "best.pt")["model"]
        moved = (state["encoder.stem.0.weight"] - weights["conv1.weight"]).abs().max()
        assert (moved < 0.01) == near, (arm, float(moved))
    text = write_ablation(sweep)["markdown"].read_text()
    rows = [line for line in text.splitlines() if line.startswith("| (")
            or line.startswith("| all")]
    assert len(rows) == len(ARM_ORDER)
    assert rows[0].startswith("| all | full method")
    for row in rows[1:]:  # part, arm, n, then each metric and its delta to the full method
        deltas = [c.strip() for c in row.strip("|").split("|")][4::2]
        assert len(deltas) == 4 and all(d[0] in "+-" for d in deltas), row
