"""Cityscapes loader on generated trees in the raw layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import labels as official
from helpers.layouts import CITYSCAPES_IDS, cityscapes_paths, write_cityscapes, write_png

from xtask_mt.data.cityscapes import MAX_TARGET, Cityscapes, disparity_target
from xtask_mt.data.files import DatasetError
from xtask_mt.data.labels import CITYSCAPES_CLASS_NAMES, cityscapes_lookup
from xtask_mt.sample import IGNORE_INDEX


def _official_class(label_id: int, num_classes: int) -> int:
    """Expected class of an 8-bit label id, read straight off the official table."""
    lab = next(lab for lab in official if lab.id % 256 == label_id)
    if num_classes == 7:
        return IGNORE_INDEX if lab.category == "void" else lab.categoryId - 1
    return lab.trainId if lab.trainId not in (255, -1) else IGNORE_INDEX


@pytest.mark.parametrize("num_classes", [7, 19])
def test_labels_map_to_official_classes(tmp_path, num_classes):
    (paths,) = write_cityscapes(tmp_path, "val", frames=1)
    ids = cv2.imread(str(paths["label"]), cv2.IMREAD_UNCHANGED)
    ds = Cityscapes(tmp_path, "val", num_classes=num_classes, height=32, width=64)
    seg = ds.decode(0)["seg"]
    expected = np.vectorize(lambda v: _official_class(int(v), num_classes))(ids)
    np.testing.assert_array_equal(seg, expected)
    assert ds.num_classes == num_classes == len(ds.class_names)
    assert set(np.unique(ids)) <= set(CITYSCAPES_IDS.tolist())


def test_label_table_spot_checks():
    seven, nineteen = cityscapes_lookup(7), cityscapes_lookup(19)
    # road, sidewalk, parking, building, sky, person, car, bicycle, license plate (-1 as 255)
    assert [seven[i] for i in (7, 8, 9, 11, 23, 24, 26, 33, 255)] == [0, 0, 0, 1, 4, 5, 6, 6, 6]
    assert [nineteen[i] for i in (7, 8, 9, 11, 23, 24, 26, 33, 255)] == [0, 1, -1, 2, 10, 11,
                                                                          13, 18, -1]
    assert all(seven[i] == IGNORE_INDEX and nineteen[i] == IGNORE_INDEX for i in range(7))


def test_class_names():
    assert CITYSCAPES_CLASS_NAMES[7] == ("flat", "construction", "object", "nature", "sky",
                                         "human", "vehicle")
    assert CITYSCAPES_CLASS_NAMES[19][:3] == ("road", "sidewalk", "building")
    assert CITYSCAPES_CLASS_NAMES[19][-1] == "bicycle"
    with pytest.raises(ValueError, match="7 .* or 19"):
        cityscapes_lookup(8)


def test_disparity_conversion_and_mask():
    raw = np.array([[0, 1, 257, 513], [65535, 2, 0, 12801]], dtype=np.uint16)
    target, valid = disparity_target(raw)
    np.testing.assert_array_equal(valid, [[False, False, True, True], [True, True, False, True]])
    # p -> d = (p - 1) / 256 pixels -> target d / 256, clipped
    np.testing.assert_allclose(target, [[0, 0, 1 / 256, 2 / 256],
                                        [MAX_TARGET, 1 / 65536, 0, 50 / 256]], rtol=1e-6)


def test_sample_contract_and_resize(tmp_path):
    (paths,) = write_cityscapes(tmp_path, "train", frames=1, height=64, width=128)
    ds = Cityscapes(tmp_path, "train", num_classes=19, height=32, width=64)
    frame = ds.decode(0)
    image = cv2.cvtColor(cv2.imread(str(paths["image"])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(frame["image"], cv2.resize(image, (64, 32),
                                                              interpolation=cv2.INTER_AREA))
    ids = cv2.imread(str(paths["label"]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(frame["seg"], cityscapes_lookup(19)[ids[::2, ::2]])
    raw = cv2.imread(str(paths["disparity"]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(frame["depth_mask"], raw[1::2, 1::2] > 1)  # centre-aligned
    sample = ds[0]
    assert sample["image"].shape == (3, 32, 64) and sample["image"].dtype == torch.float32
    assert sample["seg"].shape == (32, 64) and sample["seg"].dtype == torch.int64
    assert sample["depth"].shape == (1, 32, 64) and sample["depth_mask"].dtype == torch.bool
    assert (sample["depth"][~sample["depth_mask"]] == 0).all()
    assert (sample["depth"][sample["depth_mask"]] > 0).all()
    assert (sample["seg"] == IGNORE_INDEX).any()


def test_frames_sorted_over_cities(tmp_path):
    write_cityscapes(tmp_path, "train", frames=4)
    ds = Cityscapes(tmp_path, "train", height=32, width=64)
    names = [files[0].name for files in ds.files]
    assert len(ds) == 4 and names == sorted(names)
    assert all("labelIds" in files[1].name for files in ds.files)


# --- bad input -------------------------------------------------------------------------------

def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="Cityscapes root .*nowhere.*cityscapes-dataset.com"):
        Cityscapes(tmp_path / "nowhere", "train")


def test_missing_split_folder(tmp_path):
    write_cityscapes(tmp_path, "train", frames=1)
    with pytest.raises(DatasetError, match=r"val images not found.*leftImg8bit[/\\]val"):
        Cityscapes(tmp_path, "val")
    write_cityscapes(tmp_path, "val", frames=1)
    for sibling in (tmp_path / "disparity" / "val").rglob("*.png"):
        sibling.unlink()
    for folder in sorted((tmp_path / "disparity" / "val").glob("*")):
        folder.rmdir()
    (tmp_path / "disparity" / "val").rmdir()
    with pytest.raises(DatasetError, match=r"val disparity not found.*disparity[/\\]val"):
        Cityscapes(tmp_path, "val")


@pytest.mark.parametrize("which", ["label", "disparity"])
def test_missing_label_or_disparity_names_the_file(tmp_path, which):
    paths = write_cityscapes(tmp_path, "train", frames=2)
    paths[1][which].unlink()
    with pytest.raises(DatasetError, match=f"missing {which} file of .*{paths[1][which].name}"):
        Cityscapes(tmp_path, "train", height=32, width=64)


@pytest.mark.parametrize("which", ["label", "disparity"])
def test_a_label_or_disparity_without_its_image_is_named(tmp_path, which):
    paths = write_cityscapes(tmp_path, "train", frames=2)
    paths[1]["image"].unlink()
    paths[1][{"label": "disparity", "disparity": "label"}[which]].unlink()
    with pytest.raises(DatasetError, match=f"{paths[1][which].name} has no matching image"):
        Cityscapes(tmp_path, "train", height=32, width=64)
    paths[1][which].unlink()
    assert len(Cityscapes(tmp_path, "train", height=32, width=64)) == 1


def test_a_corrupt_png_read_by_a_loader_worker_is_one_line(tmp_path):
    from torch.utils.data import DataLoader

    paths = write_cityscapes(tmp_path, "train", frames=2)
    paths[1]["label"].write_bytes(b"not a png" * 20)
    loader = DataLoader(Cityscapes(tmp_path, "train", height=32, width=64), batch_size=1,
                        num_workers=1)
    with pytest.raises(DatasetError) as info:
        list(loader)
    assert str(info.value).startswith(f"cannot decode {paths[1]['label']}")
    assert "\n" not in str(info.value) and "worker" not in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_png_names_the_file(tmp_path, damage):
    paths = write_cityscapes(tmp_path, "train", frames=2)
    target = paths[1]["disparity"]
    data = target.read_bytes()
    target.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a png" * 20,
                        "empty": b""}[damage])
    ds = Cityscapes(tmp_path, "train", height=32, width=64)
    ds.decode(0)
    with pytest.raises(DatasetError, match=f"cannot decode .*{target.name}.*corrupt"):
        ds.decode(1)


def test_label_value_outside_known_ids(tmp_path):
    (paths,) = write_cityscapes(tmp_path, "train", frames=1)
    ids = cv2.imread(str(paths["label"]), cv2.IMREAD_UNCHANGED)
    ids[0, :3] = [34, 40, 200]
    write_png(paths["label"], ids)
    ds = Cityscapes(tmp_path, "train", height=32, width=64)
    with pytest.raises(DatasetError, match=r"labelIds.png holds values \[34, 40, 200\]"):
        ds.decode(0)


def test_wrong_channels_or_bit_depth(tmp_path):
    (paths,) = write_cityscapes(tmp_path, "train", frames=1)
    write_png(paths["label"], np.zeros((32, 64, 3), np.uint8))  # a colour image
    with pytest.raises(DatasetError, match="single-channel"):
        Cityscapes(tmp_path, "train", height=32, width=64).decode(0)
    write_png(paths["label"], np.zeros((32, 64), np.uint8))
    write_png(paths["disparity"], np.zeros((32, 64), np.uint8))  # 8-bit disparity
    with pytest.raises(DatasetError, match="disparity.png holds uint8 pixels; expected uint16"):
        Cityscapes(tmp_path, "train", height=32, width=64).decode(0)


def test_wrong_shape(tmp_path):
    (paths,) = write_cityscapes(tmp_path, "train", frames=1)
    write_png(paths["label"], np.zeros((16, 64), np.uint8))
    with pytest.raises(DatasetError, match=r"labelIds.png: labels .* shape \(16, 64\); expected "
                                           r"\(32, 64\)"):
        Cityscapes(tmp_path, "train", height=32, width=64).decode(0)


def test_empty_split(tmp_path):
    for sub in ("leftImg8bit", "gtFine", "disparity"):
        (tmp_path / sub / "train" / "aachen").mkdir(parents=True)
    with pytest.raises(DatasetError, match="train split .* holds no frames"):
        Cityscapes(tmp_path, "train")


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        Cityscapes(tmp_path, "test")


def test_paths_helper_matches_layout(tmp_path):
    paths = cityscapes_paths(tmp_path, "val", "lindau", "lindau_000000_000019")
    assert paths["label"].parts[-4:] == ("gtFine", "val", "lindau",
                                         "lindau_000000_000019_gtFine_labelIds.png")
