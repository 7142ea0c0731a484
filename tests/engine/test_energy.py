"""Consistency energy: Spearman's rank correlation by hand, the energy as the sum of the
edges' normalised disagreements, and evaluate.py's energy report on a trained run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers.config import TINY, compose_config
from omegaconf import OmegaConf

from xtask_mt.engine.energy import energy_map, spearman
from xtask_mt.engine.evaluate_run import EvalOptions, EvaluationError, evaluate_run
from xtask_mt.engine.trainer import train
from xtask_mt.models import TransferEdge


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swapped pair: 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties share their mean rank: ranks of y are 0.5, 0.5, 2, 3
    assert spearman([1, 2, 3, 4], [5, 5, 6, 7]) == pytest.approx(0.9486833, rel=1e-6)
    assert np.isnan(spearman([1, 2], [3, 4])) and np.isnan(spearman([1, 2, 3], [5, 5, 5]))
    assert spearman([1, 2, np.nan, 3, 4], [1, 2, 9, 3, 4]) == pytest.approx(1.0)  # NaN left out


def test_energy_is_the_sum_of_the_normalised_disagreements():
    identity = lambda x: x  # noqa: E731
    model = SimpleNamespace(edges=[TransferEdge("seg_to_depth", "seg", "depth", 3, 1, identity),
                                   TransferEdge("depth_to_seg", "depth", "seg", 1, 3, identity)])
    gen = torch.Generator().manual_seed(0)
    out = {"seg": torch.randn(2, 3, 4, 5, generator=gen),
           "depth": torch.rand(2, 1, 4, 5, generator=gen),
           "seg_to_depth": torch.rand(2, 1, 4, 5, generator=gen),
           "depth_to_seg": torch.randn(2, 3, 4, 5, generator=gen)}
    energy = energy_map(model, out, {"seg_to_depth": 0.5, "depth_to_seg": 2.0})
    depth_part = (out["seg_to_depth"] - out["depth"]).abs()[:, 0] / 0.5
    seg_part = torch.nn.functional.cross_entropy(out["depth_to_seg"], out["seg"].argmax(1),
                                                 reduction="none") / 2.0
    torch.testing.assert_close(energy, depth_part + seg_part)


@pytest.fixture(scope="module")
def three_task_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run3")
    cfg = compose_config(TINY + ["model.tasks=[seg,depth,normal]", "dataset.test_size=6",
                                 "model.transfer.edges=[[seg,depth],[depth,seg],"
                                 "[depth,normal],[normal,depth]]", "model.decoder_width=16"])
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
    train(cfg, out)
    return out


def test_evaluate_reports_energy_correlations_and_writes_per_image_values(three_task_run):
    result = evaluate_run(three_task_run, split="test", options=EvalOptions(
        device="cpu", progress_bar=False, panels=1, energy=True))
    energy = result["energy"]
    assert set(energy["spearman"]) == {"seg", "depth", "normal"}
    assert all(-1 <= v <= 1 for v in energy["spearman"].values())
    assert set(energy["normalisers"]) == {"seg_to_depth", "depth_to_seg", "depth_to_normal",
                                          "normal_to_depth"}
    saved = json.loads((three_task_run / "eval" / "energy_test.json").read_text())
    assert len(saved["energy"]) == 6 == len(saved["errors"]["normal"])
    assert energy["spearman"]["depth"] == pytest.approx(
        spearman(saved["energy"], saved["errors"]["depth"]))
    assert result["metrics"]["test/normal_within_30"] >= 0


def test_energy_without_transfer_nets_is_refused(tmp_path):
    cfg = compose_config(TINY + ["model=mtl"])
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    train(cfg, tmp_path)
    with pytest.raises(EvaluationError, match="energy=true needs transfer nets"):
        evaluate_run(tmp_path, options=EvalOptions(device="cpu", progress_bar=False, panels=0,
                                                   energy=True))
