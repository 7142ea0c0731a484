"""Training augmentation: alignment of every field, depth scaling, per-worker randomness."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from helpers.config import compose_config
from helpers.layouts import write_cityscapes, write_nyuv2

from xtask_mt.config.build import build_dataset, build_loader
from xtask_mt.data.transforms import (
    FieldRule,
    TrainAugmentation,
    depth_scaling_for,
    resize_nearest,
)
from xtask_mt.tasks import get_task

H, W, BLOCK = 48, 96, 6


def _coded_frame() -> dict[str, np.ndarray]:
    """Every field is a different function of one block id, so any misalignment shows."""
    rows, cols = np.mgrid[0:H, 0:W] // BLOCK
    ids = rows * (W // BLOCK) + cols  # 0..127, unique per block
    image = np.stack([ids, rows * 16, cols * 8], axis=-1).astype(np.uint8)
    return {"image": image, "seg": (ids % 13).astype(np.int8),
            "depth": ((ids + 1) * 0.01).astype(np.float32), "depth_mask": ids % 3 != 0}


def test_all_fields_stay_aligned():
    aug = TrainAugmentation(flip=True, scales=(1.0, 1.2, 1.5))
    original = np.rint(_coded_frame()["depth"] / 0.01).astype(np.int64) - 1
    np.random.seed(0)
    changed = flipped = 0
    for _ in range(30):
        out = aug(_coded_frame())
        ids = np.rint(out["depth"] / 0.01).astype(np.int64) - 1
        np.testing.assert_array_equal(out["seg"], ids % 13)
        np.testing.assert_array_equal(out["depth_mask"], ids % 3 != 0)  # masks cropped too
        assert all(v.shape[:2] == (H, W) for v in out.values())
        # In block interiors the bilinear image agrees exactly with the nearest-mapped labels.
        interior = np.ones((H, W), bool)
        for dr, dc in [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)]:
            interior &= np.roll(ids, (dr, dc), axis=(0, 1)) == ids
        interior[[0, -1], :] = interior[:, [0, -1]] = False
        assert interior.mean() > 0.3
        np.testing.assert_array_equal(out["image"][..., 0][interior], ids[interior])
        changed += not np.array_equal(ids, original)
        flipped += ids[0, 0] > ids[0, -1]
    assert changed > 5 and 5 < flipped < 25


def test_scale_crop_zooms_in():
    aug = TrainAugmentation(flip=False, scales=(2.0,))
    frame = _coded_frame()
    np.random.seed(1)
    out = aug(frame)
    ids_in = np.rint(frame["depth"] / 0.01) - 1
    ids_out = np.rint(out["depth"] / 0.01) - 1
    # Half the field of view: each block now spans twice the pixels.
    assert len(np.unique(ids_out)) < len(np.unique(ids_in)) / 2
    assert set(np.unique(ids_out)) <= set(np.unique(ids_in))


@pytest.mark.parametrize(("scaling", "expected"), [("inverse", 2.0 / 1.5),
                                                   ("proportional", 2.0 * 1.5), ("none", 2.0)])
def test_depth_scaling_direction(scaling, expected):
    frame = _coded_frame()
    frame["depth"] = np.full((H, W), 2.0, np.float32)
    rules = get_task("depth").field_rules(scaling)  # the depth task's own rule
    out = TrainAugmentation(flip=False, scales=(1.5,), rules=rules)(frame)
    np.testing.assert_allclose(out["depth"], expected, rtol=1e-6)


def test_a_field_rule_can_change_values_on_a_flip():
    """A vector map whose x component must change sign when the view is mirrored."""
    frame = _coded_frame()
    frame["vector"] = np.stack([np.full((H, W), 0.6), np.full((H, W), 0.8)], axis=-1)
    negate_x = FieldRule(flip_values=lambda v: v * [-1.0, 1.0])
    aug = TrainAugmentation(flip=True, scales=(1.0,), rules={"vector": negate_x})
    signs = set()
    np.random.seed(3)
    for _ in range(10):
        out = aug({k: v.copy() for k, v in frame.items()})
        flipped = np.rint(out["depth"][0, 0] / 0.01) > np.rint(out["depth"][0, -1] / 0.01)
        assert out["vector"][0, 0, 0] == (-0.6 if flipped else 0.6)
        signs.add(bool(flipped))
    assert signs == {True, False}


def test_depth_scaling_rules():
    assert depth_scaling_for("depth", legacy=False) == "inverse"
    assert depth_scaling_for("depth", legacy=True) == "inverse"
    assert depth_scaling_for("disparity", legacy=False) == "proportional"
    assert depth_scaling_for("disparity", legacy=True) == "none"
    with pytest.raises(ValueError, match="scales"):
        TrainAugmentation(scales=(0.5, 1.0))


def test_resize_nearest_keeps_dtype_and_centres():
    a = np.arange(16, dtype=np.int8).reshape(4, 4)
    np.testing.assert_array_equal(resize_nearest(a, 2, 2), [[5, 7], [13, 15]])
    assert resize_nearest(a > 3, 8, 8).dtype == bool


def _cfg(tmp_path, name: str, *extra: str):
    return compose_config([f"dataset={name}", f"dataset.root={tmp_path}", "dataset.height=24",
                           "dataset.width=32", "dataset.cache=false", "trainer.seed=0", *extra])


@pytest.mark.parametrize(("name", "legacy", "expected"), [
    ("cityscapes", False, "proportional"), ("cityscapes", True, "none"),
    ("nyuv2", False, "inverse"), ("nyuv2", True, "inverse")])
def test_factory_picks_scaling_and_augments_train_only(tmp_path, name, legacy, expected):
    for split in ("train", "val"):
        if name == "cityscapes":
            write_cityscapes(tmp_path, split, frames=1, height=24, width=32)
        else:
            write_nyuv2(tmp_path, split, frames=1, height=24, width=32)
    cfg = _cfg(tmp_path, name, f"dataset.augment.legacy_depth_scaling={legacy}")
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    zoom = train.transform.rules["depth"].zoom
    factor = 1.0 if zoom is None else float(zoom(np.ones(1), 2.0)[0])
    assert factor == {"proportional": 2.0, "none": 1.0, "inverse": 0.5}[expected]
    assert val.transform is None
    cfg = _cfg(tmp_path, name, "dataset.augment.enabled=false")
    assert build_dataset(cfg, "train").transform is None


def test_workers_draw_different_augmentations(tmp_path):
    (paths,) = write_cityscapes(tmp_path, "train", frames=1, height=32, width=64)
    for i in range(1, 6):  # six identical frames
        for src in paths.values():
            shutil.copy(src, src.with_name(src.name.replace("_000000_", f"_{i:06d}_")))
    cfg = _cfg(tmp_path, "cityscapes", "dataset.height=32", "dataset.width=64",
               "dataset.augment.scales=[1.5]", "dataset.num_workers=2", "dataset.batch_size=1")
    ds = build_dataset(cfg, "train")
    assert len(ds) == 6
    images = [batch["image"][0] for batch in build_loader(cfg, ds, train=True)]
    # Batches alternate between the two workers; identical inputs, so only the draws differ.
    worker0, worker1 = images[0::2], images[1::2]
    assert not all(torch.equal(a, b) for a, b in zip(worker0, worker1, strict=True))
    assert not torch.equal(images[0], images[2])
