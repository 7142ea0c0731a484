"""evaluate.py's engine: metrics equal an independent recomputation, figures, protocol, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers.config import ROOT, TINY, compose_config
from omegaconf import OmegaConf

from xtask_mt.config.build import build_model
from xtask_mt.data.synthetic import SyntheticScenes
from xtask_mt.engine.checkpoint import CheckpointError
from xtask_mt.engine.evaluate_run import (
    EvalOptions,
    EvaluationError,
    evaluate_run,
    last_k_mean,
    protocol_notes,
)
from xtask_mt.engine.latency import measure_latency
from xtask_mt.engine.trainer import train
from xtask_mt.reports.evaluation import format_report
from xtask_mt.sample import IGNORE_INDEX

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RUN_OVERRIDES = [*TINY, "dataset.train_size=4", "dataset.test_size=6",
                 "model.decoder_width=16"]

QUIET = EvalOptions(device="cpu", progress_bar=False, panels=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny one-epoch xtask run laid out like a train.py job (config under .hydra/)."""
    out = tmp_path_factory.mktemp("run")
    cfg = compose_config(RUN_OVERRIDES)
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
    train(cfg, out)
    return out


@pytest.fixture(scope="module")
def test_result(run_dir: Path) -> dict:
    return evaluate_run(run_dir, split="test", options=EvalOptions(
        progress_bar=False, panels=2, save_predictions=True, device="cpu"))


def _recompute(pred: dict[str, np.ndarray], data: SyntheticScenes) -> dict[str, float]:
    """The metrics from saved predictions and the dataset's targets, in plain numpy."""
    c = data.num_classes
    seg_gt = np.stack([data[i]["seg"].numpy() for i in range(len(data))])
    depth_gt = np.stack([data[i]["depth"][0].numpy() for i in range(len(data))]).astype(float)
    mask = np.stack([data[i]["depth_mask"][0].numpy() for i in range(len(data))])
    labelled = seg_gt != IGNORE_INDEX
    seg = pred["seg"].astype(np.int64)
    conf = np.zeros((c, c))
    np.add.at(conf, (seg_gt[labelled], seg[labelled]), 1)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    out = {"miou": float(np.mean(np.diag(conf)[union > 0] / union[union > 0])),
           "pixacc": float(np.trace(conf) / conf.sum())}
    ious, accs = [], []
    for g, p in zip(seg_gt, seg, strict=True):
        valid = g != IGNORE_INDEX
        if not valid.any():
            continue
        per_class = []
        for k in range(c):
            inter = np.sum((g == k) & (p == k) & valid)
            uni = np.sum(((g == k) | (p == k)) & valid)
            if uni:
                per_class.append(inter / uni)
        ious.append(np.mean(per_class))
        accs.append(np.mean(g[valid] == p[valid]))
    out["miou_legacy"], out["pixacc_legacy"] = float(np.mean(ious)), float(np.mean(accs))
    d, t = pred["depth"].astype(float)[mask], depth_gt[mask]
    err = np.abs(d - t)
    ratio = np.maximum(np.maximum(d, 1e-6) / t, t / np.maximum(d, 1e-6))
    out.update(abs_err=err.mean(), abs_rel=(err / t).mean(), rmse=np.sqrt((err**2).mean()),
               delta1=np.mean(ratio < 1.25), delta2=np.mean(ratio < 1.25**2),
               delta3=np.mean(ratio < 1.25**3))
    out["consistency_seg_to_depth"] = np.abs(pred["seg_to_depth"].astype(float) -
                                          pred["depth"].astype(float))[mask].mean()
    out["consistency_depth_to_seg"] = np.mean((pred["depth_to_seg"] == pred["seg"])[labelled])
    # the seed's energy of the seg -> depth edge counts every pixel (that of depth -> seg
    # needs the logits, which are not saved)
    out["energy_seg_to_depth"] = np.abs(pred["seg_to_depth"].astype(float) -
                                        pred["depth"].astype(float)).mean()
    out["per_class"] = [float(np.diag(conf)[k] / union[k]) if union[k] else None
                        for k in range(c)]
    return out


def test_metrics_json_equals_recomputation_from_saved_predictions(run_dir, test_result):
    saved = json.loads((run_dir / "eval" / "metrics_test.json").read_text())
    assert saved["split"] == "test" and saved["num_images"] == 6
    assert saved["metrics"] == test_result["metrics"]
    pred = dict(np.load(saved["predictions"]))
    assert set(pred) == {"seg", "depth_to_seg", "depth", "seg_to_depth"}
    assert pred["seg"].shape == (6, 32, 64)
    d = compose_config(RUN_OVERRIDES).dataset
    data = SyntheticScenes("test", size=6, height=d.height, width=d.width, seed=d.seed)
    expected = _recompute(pred, data)
    per_class = expected.pop("per_class")
    losses = {f"test/loss_{k}" for k in ("seg", "depth", "seg_to_depth", "depth_to_seg")}
    energy = {"test/energy_depth_to_seg", "test/consistency_energy"}
    assert set(saved["metrics"]) == {f"test/{k}" for k in expected} | losses | energy
    for key, value in expected.items():
        assert saved["metrics"][f"test/{key}"] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert saved["class_names"] == list(SyntheticScenes.class_names)
    assert [saved["per_class_iou"][name] for name in saved["class_names"]] == pytest.approx(
        per_class, rel=1e-6)


def test_panels_and_chart_are_valid_pngs(run_dir, test_result):
    figures = [Path(f) for f in test_result["figures"]]
    assert sorted(f.name for f in figures) == ["per_class_iou_test.png", "test_000.png",
                                               "test_001.png"]
    for path in figures:
        assert path.is_relative_to(run_dir / "eval")
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 10  # drawn, not blank


def test_report_labels_standard_and_legacy_and_names_classes(test_result):
    report = format_report(test_result)
    for text in ("legacy per-image", "standard", "vehicle", "abs rel error",
                 "cross-task consistency", "split test, 6 images"):
        assert text in report


def test_foreign_model_config_is_refused_naming_the_mismatch(run_dir):
    with pytest.raises(CheckpointError) as info:
        evaluate_run(run_dir, overrides=["model.tasks=[seg]", "model.transfer.enabled=false"],
                     options=QUIET)
    message = str(info.value)
    assert "model.tasks" in message and "model.transfer.enabled" in message
    assert "Missing key" not in message and "state_dict" not in message


def test_checkpoint_file_alone_uses_its_saved_config(run_dir):
    result = evaluate_run(ckpt=run_dir / "checkpoints" / "last.pt", options=QUIET)
    assert result["epoch"] == 1 and result["split"] == "val"
    assert result["notes"] == []  # last.pt was not picked on val
    final = json.loads((run_dir / "metrics.json").read_text())["final"]
    assert result["metrics"] == pytest.approx(final, rel=1e-5)  # as train.py validated it
    latest = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert latest["checkpoint"].endswith("last.pt") and latest["split"] == "val"
    assert (run_dir / "eval" / "metrics_test.json").is_file()  # the other split is kept


def test_last_k_is_the_mean_of_the_last_validated_epochs(tmp_path):
    history = [{"epoch": 2, "val/miou": 0.30, "val/abs_err": 0.20},
               {"epoch": 4, "val/miou": 0.40, "val/abs_err": 0.15},
               {"epoch": 6, "val/miou": 0.45, "val/abs_err": 0.11}]
    (tmp_path / "metrics.json").write_text(json.dumps({"history": history}))
    result = last_k_mean(tmp_path, 2)
    assert result["epochs"] == [4, 6] and result["split"] == "val"
    assert result["metrics"] == pytest.approx({"val/miou": 0.425, "val/abs_err": 0.13})
    with pytest.raises(EvaluationError, match="last_k=4 but .* holds 3 validated epochs"):
        last_k_mean(tmp_path, 4)
    (tmp_path / "metrics.json").write_text(json.dumps({"final": {}}))
    with pytest.raises(EvaluationError, match="no per-epoch 'history'"):
        last_k_mean(tmp_path, 1)


def test_split_protocol_notes_and_missing_test_split(run_dir):
    with pytest.raises(EvaluationError, match="has only the train, val splits"):
        evaluate_run(run_dir, split="test", overrides=["dataset.splits=[train,val]"],
                     options=QUIET)
    assert "no separate test split" in protocol_notes("nyuv2", ["train", "val"], "val",
                                                       chosen_on_val=True)[0]
    assert "split=test" in protocol_notes("synthetic", ["train", "val", "test"], "val",
                                          chosen_on_val=True)[0]
    assert protocol_notes("synthetic", ["train", "val", "test"], "test", chosen_on_val=True) == []
    assert protocol_notes("nyuv2", ["train", "val"], "val", chosen_on_val=False) == []


def test_latency_reports_both_modes():
    cfg = compose_config(RUN_OVERRIDES)
    model = build_model(cfg, 7)
    latency = measure_latency(model, 32, 64, batch_size=2, device=torch.device("cpu"),
                              warmup=0, iters=1)
    assert set(latency) == {"direct", "with_transfer"}
    for mode in latency.values():
        assert mode["ms_per_image_batch1"] > 0 and mode["images_per_s_batch"] > 0
        assert mode["batch_size"] == 2


@pytest.mark.slow
def test_command_line_prints_the_table(run_dir):
    done = subprocess.run(
        [sys.executable, "evaluate.py", f"run={run_dir}", "split=test", "panels=0",
         "progress_bar=false", "device=cpu", "measure_latency=true", "latency.warmup=0",
         "latency.iters=1"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "mIoU (%)" in done.stdout and "ms/image (batch 1)" in done.stdout


@pytest.mark.parametrize(("policy", "checkpoint", "said"), [
    ("none", "best", "ran with trainer.keep_checkpoints=none"),
    ("best_weights", "last", "removes last.pt when it finishes; evaluate checkpoint=best"),
    ("all", "best", "checkpoint .* does not exist")])
def test_a_checkpoint_the_job_did_not_keep_is_explained_by_its_keep_policy(
        tmp_path: Path, policy: str, checkpoint: str, said: str) -> None:
    cfg = compose_config([*TINY, f"trainer.keep_checkpoints={policy}"])
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    error = EvaluationError if policy != "all" else CheckpointError
    with pytest.raises(error, match=said):
        evaluate_run(run=tmp_path, checkpoint=checkpoint)
