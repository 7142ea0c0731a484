"""Loaders on real dataset files from ../shared/data/real (skipped when absent).

The real files are copied into a temporary tree in the loaders' layout, never into the
project. No real Cityscapes disparity exists there, so a generated one stands in for it.
"""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from helpers.config import SHARED_DATA

from xtask_mt.data.cityscapes import Cityscapes
from xtask_mt.data.labels import cityscapes_lookup
from xtask_mt.data.nyuv2 import NYUv2
from xtask_mt.data.transforms import resize_nearest

CS = SHARED_DATA / "cityscapes"
FRAME = "frankfurt_000000_000294"
CS_IMAGE = CS / "leftImg8bit" / "val" / "frankfurt" / f"{FRAME}_leftImg8bit.png"
CS_LABELS = CS / "gtFine" / "val" / "frankfurt" / f"{FRAME}_gtFine_labelIds.png"
CS_TRAIN_IDS = CS / "gtFine" / "val" / "frankfurt" / f"{FRAME}_gtFine_labelTrainIds.png"
NYU_LABELS = SHARED_DATA / "nyuv2" / "nyuv2-meta-data" / "test_labels_13"
NYU_RAW = SHARED_DATA / "nyuv2" / "pseudo_nyu_dataset"

needs_cityscapes = pytest.mark.skipif(
    not (CS_IMAGE.is_file() and CS_LABELS.is_file() and CS_TRAIN_IDS.is_file()),
    reason=f"real Cityscapes sample not found under {CS}")
needs_nyu = pytest.mark.skipif(not (NYU_LABELS.is_dir() and NYU_RAW.is_dir()),
                               reason=f"real NYUv2 samples not found under {SHARED_DATA}")


@pytest.fixture
def cityscapes_root(tmp_path):
    city = ("val", "frankfurt")
    for sub in ("leftImg8bit", "gtFine", "disparity"):
        (tmp_path / sub / city[0] / city[1]).mkdir(parents=True)
    shutil.copy(CS_IMAGE, tmp_path / "leftImg8bit" / "val" / "frankfurt" / CS_IMAGE.name)
    shutil.copy(CS_LABELS, tmp_path / "gtFine" / "val" / "frankfurt" / CS_LABELS.name)
    h, w = cv2.imread(str(CS_LABELS), cv2.IMREAD_UNCHANGED).shape
    disparity = np.full((h, w), 5000, np.uint16)
    disparity[-10:] = 0
    cv2.imwrite(str(tmp_path / "disparity" / "val" / "frankfurt" / f"{FRAME}_disparity.png"),
                disparity)
    return tmp_path


@needs_cityscapes
def test_real_frame_loads_with_its_label_ids(cityscapes_root):
    ids = cv2.imread(str(CS_LABELS), cv2.IMREAD_UNCHANGED)
    h, w = ids.shape  # read from the file: the sample is not at full resolution
    ds = Cityscapes(cityscapes_root, "val", num_classes=7, height=h, width=w)
    frame = ds.decode(0)
    rgb = cv2.cvtColor(cv2.imread(str(CS_IMAGE)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(frame["image"], rgb)
    seg = frame["seg"]
    names = ds.class_names
    rows = np.arange(h)[:, None].repeat(w, axis=1)
    sky, flat = seg == names.index("sky"), seg == names.index("flat")
    assert sky.any() and flat.any() and rows[sky].mean() < rows[flat].mean()
    assert (seg[ids == 1] == -1).all()  # ego vehicle is void
    assert (seg[ids == 26] == names.index("vehicle")).all()
    # Sky is bright, vegetation green-dominant: image and labels line up.
    assert rgb[sky].mean() > 200
    veg = ids == 21
    assert (rgb[veg][:, 1] > rgb[veg][:, 0]).mean() > 0.5


@needs_cityscapes
def test_real_19_class_map_agrees_with_shipped_train_ids(cityscapes_root):
    ids = cv2.imread(str(CS_LABELS), cv2.IMREAD_UNCHANGED)
    train_ids = cv2.imread(str(CS_TRAIN_IDS), cv2.IMREAD_UNCHANGED).astype(np.int64)
    expected = np.where(train_ids == 255, -1, train_ids)
    h, w = ids.shape
    seg = Cityscapes(cityscapes_root, "val", num_classes=19, height=h, width=w).decode(0)["seg"]
    # The shipped trainId file was resized separately upstream: compare away from boundaries.
    kernel = np.ones((5, 5), np.uint8)
    interior = cv2.dilate(ids, kernel) == cv2.erode(ids, kernel)
    assert interior.mean() > 0.5
    np.testing.assert_array_equal(seg[interior], expected[interior])
    assert (seg == expected).mean() > 0.99


@needs_cityscapes
def test_real_frame_resized_and_cached(cityscapes_root, tmp_path_factory):
    ids = cv2.imread(str(CS_LABELS), cv2.IMREAD_UNCHANGED)
    h, w = ids.shape[0] // 2, ids.shape[1] // 2
    cache = tmp_path_factory.mktemp("cache")
    ds = Cityscapes(cityscapes_root, "val", num_classes=19, height=h, width=w,
                    cache_dir=cache, progress=False)
    frame = ds.frame(0)
    np.testing.assert_array_equal(frame["seg"], resize_nearest(cityscapes_lookup(19)[ids], h, w))
    assert frame["image"].shape == (h, w, 3)
    assert not frame["depth_mask"][-3:].any() and frame["depth_mask"][:-6].all()


@needs_nyu
def test_real_nyu_labels_and_depth(tmp_path):
    png = cv2.imread(str(NYU_LABELS / "new_nyu_class13_0001.png"), cv2.IMREAD_UNCHANGED)
    h, w = png.shape
    for sub in ("image", "label", "depth"):
        (tmp_path / "val" / sub).mkdir(parents=True)
    label = png.astype(np.float32) - 1.0  # 0 = void -> -1, classes 1..13 -> 0..12
    rgb = cv2.imread(str(next((NYU_RAW / "images").glob("*.jpg"))))
    depth_mm = cv2.imread(str(next((NYU_RAW / "annotations").glob("*.png"))),
                          cv2.IMREAD_UNCHANGED)
    assert depth_mm.dtype == np.uint16
    # The real RGB-D frame is smaller than the label map; bring it to the labels' size.
    image = cv2.resize(rgb[..., ::-1], (w, h), interpolation=cv2.INTER_LINEAR) / 255.0
    depth = resize_nearest(depth_mm, h, w).astype(np.float32)[..., None] / 1000.0
    np.save(tmp_path / "val" / "image" / "0.npy", image.astype(np.float32))
    np.save(tmp_path / "val" / "label" / "0.npy", label)
    np.save(tmp_path / "val" / "depth" / "0.npy", depth)

    frame = NYUv2(tmp_path, "val", height=288, width=384).decode(0)
    np.testing.assert_array_equal(frame["seg"], resize_nearest(label, 288, 384))
    assert set(np.unique(frame["seg"])) <= set(range(-1, 13))
    assert (frame["seg"] == -1).any()
    valid = frame["depth"][frame["depth_mask"]]
    assert 0.2 < frame["depth_mask"].mean() < 0.9
    assert valid.min() > 1.0 and valid.max() <= 10.0  # metres
