"""A whole training job on a generated Cityscapes tree: the dataset plugs into the engine."""

from __future__ import annotations

import json
import math

import pytest
from helpers.config import compose_config
from helpers.layouts import write_cityscapes

from xtask_mt.engine.trainer import train


@pytest.mark.slow
def test_train_one_epoch_on_cityscapes_layout(tmp_path):
    data = tmp_path / "cityscapes"
    write_cityscapes(data, "train", frames=2, height=64, width=128)
    write_cityscapes(data, "val", frames=1, height=64, width=128, seed=1)
    cfg = compose_config([
        "experiment=cityscapes_paper", f"dataset.root={data}", "dataset.num_classes=19",
        "encoder=resnet18", "dataset.height=32", "dataset.width=64", "dataset.batch_size=2",
        "dataset.num_workers=0", "trainer.epochs=1", "trainer.device=cpu",
        "trainer.progress_bar=false", "model.decoder_width=32"])
    summary = train(cfg, tmp_path / "run")
    assert math.isfinite(summary["final"]["val/miou"])
    assert math.isfinite(summary["final"]["val/abs_rel"])
    assert math.isfinite(summary["train"]["total"])
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1
    assert len(list((data / "prepared").glob("cityscapes-train-32x64-c19-*"))) == 1
