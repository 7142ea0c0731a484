"""Figures: palettes by class name, label colouring, panels and IoU charts as valid PNGs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers.config import SHARED_DATA

from xtask_mt.viz.panels import PanelRow, colourise, iou_bar_chart, palette, sample_panel

NAMES = ["flat", "construction", "object", "nature", "sky", "human", "vehicle"]


def test_palette_uses_dataset_colours_by_name_and_distinct_fallbacks():
    colours = palette(NAMES)
    assert tuple(colours[4]) == (70, 130, 180)  # Cityscapes sky
    assert tuple(palette(["road", "car"])[1]) == (0, 0, 142)
    nyu = palette(["bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
                   "picture", "sofa", "table", "tv", "wall", "window"])
    assert len({tuple(c) for c in nyu}) == 13


def test_colourise_paints_ignored_pixels_black():
    labels = np.array([[0, 4], [-1, 6]])
    rgb = colourise(labels, palette(NAMES))
    assert tuple(rgb[1, 0]) == (0, 0, 0)
    assert tuple(rgb[0, 1]) == (70, 130, 180)


def test_panel_with_missing_predictions_and_chart_with_unseen_class(tmp_path):
    rng = np.random.default_rng(0)
    seg = rng.integers(0, 7, (24, 48))
    depth = rng.uniform(0.1, 1.0, (24, 48)).astype(np.float32)
    mask = depth > 0.2
    rows = [PanelRow("seg", "labels", seg, seg >= 0, {"direct": seg, "depth_to_seg": None}),
            PanelRow("depth", "map", depth, mask, {"direct": depth * 1.1, "seg_to_depth": None},
                     unit="m")]
    normal = rng.normal(size=(24, 48, 3))
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    rows.append(PanelRow("normal", "vector", normal, mask, {"direct": -normal,
                                                             "depth_to_normal": normal}))
    panel = sample_panel(tmp_path / "p.png", rng.uniform(0, 1, (24, 48, 3)), rows, NAMES)
    chart = iou_bar_chart(tmp_path / "c.png", NAMES, [0.9, 0.5, None, 0.1, 0.8, 0.0, 0.3])
    for path in (panel, chart):
        image = cv2.imread(str(path))
        assert image is not None and min(image.shape[:2]) > 100 and image.std() > 10


CITYSCAPES_19 = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                 "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                 "truck", "bus", "train", "motorcycle", "bicycle"]


def test_real_cityscapes_frame_draws_in_official_colours(tmp_path):
    real = SHARED_DATA
    frame = real / "cityscapes" / "leftImg8bit" / "val" / "frankfurt" / \
        "frankfurt_000000_000294_leftImg8bit.png"
    train_ids = real / "cityscapes" / "gtFine" / "val" / "frankfurt" / \
        "frankfurt_000000_000294_gtFine_labelTrainIds.png"
    if not (frame.is_file() and train_ids.is_file()):
        pytest.skip(f"real data samples not found under {real}")
    labels = cv2.imread(str(train_ids), cv2.IMREAD_UNCHANGED).astype(np.int64)
    labels[labels == 255] = -1  # Cityscapes ignore
    rgb = colourise(labels, palette(CITYSCAPES_19))
    assert (rgb[labels == 10] == (70, 130, 180)).all()  # sky
    assert (rgb[labels == 0] == (128, 64, 128)).all()   # road
    assert (rgb[labels == -1] == 0).all()
    image = cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB) / 255.0
    no_depth = np.zeros(labels.shape, np.float32)  # this frame ships without disparity
    rows = [PanelRow("seg", "labels", labels, labels >= 0, {"direct": labels.clip(min=0)}),
            PanelRow("depth", "map", no_depth, no_depth > 0, {"direct": None})]
    panel = sample_panel(tmp_path / "real.png", image, rows, CITYSCAPES_19)
    assert cv2.imread(str(panel)) is not None
