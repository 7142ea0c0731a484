"""A split whose ground truth of a task is all invalid: the data are named, not the config."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers.config import compose_config
from helpers.layouts import write_nyuv2

from xtask_mt.engine.trainer import NoValidPixelsError, train


def _nyuv2_config(root, *overrides: str):
    return compose_config(["dataset=nyuv2", f"dataset.root={root}", "dataset.height=32",
                           "dataset.width=64", "dataset.batch_size=2", "dataset.num_workers=0",
                           "encoder=resnet18", "trainer.epochs=1", "trainer.device=cpu",
                           "trainer.progress_bar=false", *overrides])


def _nyuv2_with_blank_val_normals(root):
    write_nyuv2(root, "train", frames=2, height=32, width=64, normals=True)
    write_nyuv2(root, "val", frames=2, height=32, width=64, normals=True, seed=1)
    for path in (root / "val" / "normal").glob("*.npy"):
        np.save(path, np.zeros((32, 64, 3), np.float32))  # every normal invalid


def test_a_monitor_with_no_valid_pixel_in_the_val_split_blames_the_data(tmp_path):
    _nyuv2_with_blank_val_normals(tmp_path / "nyu")
    cfg = _nyuv2_config(tmp_path / "nyu", "model=stl_normal")
    with pytest.raises(NoValidPixelsError, match=r"trainer.monitor=val/normal_mean cannot be "
                                                 r"measured: the validation split has no valid "
                                                 r"pixel of its task"):
        train(cfg, tmp_path / "run")


def test_a_task_with_no_valid_pixel_in_the_val_split_is_warned_about(tmp_path, caplog):
    _nyuv2_with_blank_val_normals(tmp_path / "nyu")
    cfg = _nyuv2_config(tmp_path / "nyu", "model.tasks=[seg,depth,normal]")
    with caplog.at_level(logging.WARNING, logger="xtask_mt"):
        summary = train(cfg, tmp_path / "run")
    assert "val/miou" in summary["final"] and "val/normal_mean" not in summary["final"]
    warned = [r.getMessage() for r in caplog.records if "not measured" in r.getMessage()]
    assert warned and "val/normal_mean" in warned[0] and "no valid pixel" in warned[0]
