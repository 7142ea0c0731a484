"""NYUv2 loader on generated trees in the preprocessed .npy layout."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.layouts import write_nyuv2

from xtask_mt.data.files import DatasetError
from xtask_mt.data.nyuv2 import NYUv2
from xtask_mt.sample import IGNORE_INDEX


def test_frame_matches_files(tmp_path):
    write_nyuv2(tmp_path, "val", frames=2, height=24, width=32)
    ds = NYUv2(tmp_path, "val", height=24, width=32)
    assert len(ds) == 2 and ds.num_classes == 13 and ds.depth_unit == "m"
    frame = ds.decode(1)
    label = np.load(tmp_path / "val" / "label" / "1.npy")
    depth = np.load(tmp_path / "val" / "depth" / "1.npy")[..., 0]
    np.testing.assert_array_equal(frame["image"], np.load(tmp_path / "val" / "image" / "1.npy"))
    np.testing.assert_array_equal(frame["seg"], label.astype(np.int64))
    np.testing.assert_array_equal(frame["depth"], depth)
    np.testing.assert_array_equal(frame["depth_mask"], depth > 0)
    sample = ds[1]
    assert sample["seg"].min() == IGNORE_INDEX and sample["seg"].max() <= 12
    assert sample["depth"].shape == (1, 24, 32)
    assert float(sample["depth"].max()) == pytest.approx(float(depth.max()))


def test_depth_without_channel_axis_and_resize(tmp_path):
    write_nyuv2(tmp_path, "train", frames=1, height=48, width=64, depth_channel=False)
    frame = NYUv2(tmp_path, "train", height=24, width=32).decode(0)
    label = np.load(tmp_path / "train" / "label" / "0.npy")
    assert frame["image"].shape == (24, 32, 3) and frame["depth"].shape == (24, 32)
    np.testing.assert_array_equal(frame["seg"], label[1::2, 1::2])  # nearest, centre-aligned


def test_numeric_file_order(tmp_path):
    write_nyuv2(tmp_path, "train", frames=12)
    ds = NYUv2(tmp_path, "train", height=24, width=32)
    assert [p[0].stem for p in ds.files] == [str(i) for i in range(12)]


def test_missing_root_and_split(tmp_path):
    with pytest.raises(DatasetError, match="NYUv2 root .*lorenmt/mtan"):
        NYUv2(tmp_path / "nyu", "train")
    write_nyuv2(tmp_path, "train", frames=1)
    with pytest.raises(DatasetError, match=r"NYUv2 val image folder not found.*val[/\\]image"):
        NYUv2(tmp_path, "val")


@pytest.mark.parametrize("sub", ["label", "depth"])
def test_missing_file_is_named(tmp_path, sub):
    write_nyuv2(tmp_path, "train", frames=3)
    (tmp_path / "train" / sub / "2.npy").unlink()
    with pytest.raises(DatasetError, match=rf"missing {sub} file of .*image[/\\]2.npy"):
        NYUv2(tmp_path, "train")


def test_a_label_without_its_image_is_named(tmp_path):
    write_nyuv2(tmp_path, "train", frames=3)
    (tmp_path / "train" / "image" / "2.npy").unlink()
    with pytest.raises(DatasetError, match=r"label[/\\]2.npy.* has no matching image"):
        NYUv2(tmp_path, "train")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_npy_is_named(tmp_path, damage):
    write_nyuv2(tmp_path, "train", frames=2)
    path = tmp_path / "train" / "depth" / "1.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00" * 64)
    ds = NYUv2(tmp_path, "train", height=24, width=32)
    with pytest.raises(DatasetError, match=r"cannot read .*depth[/\\]1.npy.*corrupt"):
        ds.decode(1)


@pytest.mark.parametrize("bad", [13.0, -2.0, 2.5, np.nan])
def test_label_outside_classes(tmp_path, bad):
    write_nyuv2(tmp_path, "train", frames=1)
    path = tmp_path / "train" / "label" / "0.npy"
    label = np.load(path)
    label[3, 3] = bad
    np.save(path, label)
    with pytest.raises(DatasetError, match=r"label[/\\]0.npy holds values .* outside"):
        NYUv2(tmp_path, "train", height=24, width=32).decode(0)


@pytest.mark.parametrize(("sub", "array", "message"), [
    ("image", np.zeros((24, 32), np.float32), "expected HxWx3"),
    ("label", np.zeros((24, 30), np.float32), r"shape \(24, 30\); expected \(24, 32\)"),
    ("depth", np.ones((20, 32, 1), np.float32), r"shape \(20, 32\); expected \(24, 32\)"),
    ("image", np.full((24, 32, 3), 255.0, np.float32), r"in \[0, 1\]"),
])
def test_wrong_shape_or_range(tmp_path, sub, array, message):
    write_nyuv2(tmp_path, "train", frames=1)
    np.save(tmp_path / "train" / sub / "0.npy", array)
    with pytest.raises(DatasetError, match=message):
        NYUv2(tmp_path, "train", height=24, width=32).decode(0)


def test_empty_split(tmp_path):
    for sub in ("image", "label", "depth"):
        (tmp_path / "val" / sub).mkdir(parents=True)
    with pytest.raises(DatasetError, match="val split .* holds no frames"):
        NYUv2(tmp_path, "val")
