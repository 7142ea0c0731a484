"""Baseline model configs train, pick their checkpoint sensibly, and give Delta_m."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from helpers.config import TINY, compose_config
from omegaconf import OmegaConf

from xtask_mt.engine.checkpoint import load_checkpoint
from xtask_mt.engine.evaluate_run import EvalOptions, evaluate_run
from xtask_mt.engine.trainer import train
from xtask_mt.reports.delta_m import delta_m, merge_baselines, read_eval_metrics

FAST = [*TINY, "dataset.train_size=4", "dataset.test_size=4", "model.decoder_width=16"]
EXPECTED = {  # model -> (outputs, monitor, mode)
    "mtl": ({"seg", "depth"}, "val/miou", "max"),
    "stl_segmentation": ({"seg"}, "val/miou", "max"),
    "stl_depth": ({"depth"}, "val/abs_err", "min"),
}

QUIET = EvalOptions(device="cpu", progress_bar=False, panels=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny epoch of each baseline, laid out like train.py jobs."""
    out = {}
    for model in EXPECTED:
        run = tmp_path_factory.mktemp(model)
        cfg = compose_config([*FAST, f"model={model}"])
        (run / ".hydra").mkdir()
        OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
        train(cfg, run)
        out[model] = run
    return out


@pytest.mark.parametrize("model", list(EXPECTED))
def test_baseline_trains_one_epoch_and_monitors_a_metric_it_has(runs, model):
    outputs, monitor, mode = EXPECTED[model]
    summary = json.loads((runs[model] / "metrics.json").read_text())
    assert (summary["monitor"], summary["monitor_mode"]) == (monitor, mode)
    assert summary["best_epoch"] == 1 and monitor in summary["best"]
    assert ("val/miou" in summary["final"]) == ("seg" in outputs)
    assert ("val/abs_err" in summary["final"]) == ("depth" in outputs)
    assert not any(k.startswith("val/consistency") for k in summary["final"])
    state = load_checkpoint(runs[model] / "checkpoints" / "best.pt")["model"]
    assert not any(k.startswith(("seg_to_depth", "depth_to_seg")) for k in state)
    assert {k.split(".")[1] for k in state if k.startswith("decoders.")} == outputs


def test_multi_task_run_gets_delta_m_against_the_single_task_runs(runs):
    for model in ("stl_segmentation", "stl_depth"):
        evaluate_run(runs[model], split="test", options=QUIET)
    result = evaluate_run(runs["mtl"], split="test", options=replace(
        QUIET, baselines=[runs["stl_segmentation"], runs["stl_depth"]]))
    _, own = read_eval_metrics(runs["mtl"])
    expected, _ = delta_m(own, merge_baselines(
        {m: read_eval_metrics(runs[m])[1] for m in ("stl_segmentation", "stl_depth")}))
    assert result["delta_m"]["value"] == pytest.approx(expected)
    assert "better than the single-task" in result["delta_m"]["convention"]
    with pytest.raises(ValueError, match="evaluated on split test, this run on val"):
        evaluate_run(runs["mtl"], split="val",
                     options=replace(QUIET, baselines=[runs["stl_segmentation"]]))
