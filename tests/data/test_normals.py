"""Surface normals in the data: the NYUv2 normal files through the loader and the cache,
the flip rule, and synthetic normals that agree with the synthetic depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.config import compose_config
from helpers.layouts import write_nyuv2

from xtask_mt.config.build import build_dataset
from xtask_mt.data.files import DatasetError
from xtask_mt.data.nyuv2 import NYUv2
from xtask_mt.data.synthetic import render_scene
from xtask_mt.data.transforms import TrainAugmentation
from xtask_mt.errors import ConfigError
from xtask_mt.tasks import get_task


def test_a_flip_negates_x_and_only_x():
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(4, 6, 3)).astype(np.float32)
    aug = TrainAugmentation(flip=True, scales=(1.0,),
                            rules=get_task("normal").field_rules("inverse"))
    np.random.seed(1)  # the first draw of this seed flips
    flipped = aug({"normal": normal, "seg": np.zeros((4, 6), np.int8)})["normal"]
    np.testing.assert_array_equal(flipped[..., 0], -normal[:, ::-1, 0])
    np.testing.assert_array_equal(flipped[..., 1:], normal[:, ::-1, 1:])


def test_scale_crop_keeps_normals_unit_vectors():
    rng = np.random.default_rng(1)
    normal = rng.normal(size=(16, 24, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    frame = {"image": rng.random((16, 24, 3)).astype(np.float32), "normal": normal,
             "seg": np.zeros((16, 24), np.int8)}
    aug = TrainAugmentation(flip=True, scales=(1.5,), rules=get_task("normal").field_rules(
        "inverse"))
    np.random.seed(0)
    out = aug(frame)
    np.testing.assert_allclose(np.linalg.norm(out["normal"], axis=-1), 1.0, rtol=1e-6)


def _cfg(root, *extra: str):
    return compose_config(["dataset=nyuv2", f"dataset.root={root}", "dataset.height=16",
                           "dataset.width=24", "model.tasks=[seg,depth,normal]", *extra])


@pytest.mark.parametrize("cache", [True, False])
def test_nyuv2_normals_through_the_loader_and_the_cache(tmp_path, cache):
    write_nyuv2(tmp_path, "val", frames=2, height=16, width=24, normals=True)
    ds = build_dataset(_cfg(tmp_path, f"dataset.cache={cache}"), "val")
    assert ds.normals and (ds.prepared is not None) == cache
    sample = ds[1]
    stored = np.load(tmp_path / "val" / "normal" / "1.npy")
    np.testing.assert_allclose(sample["normal"].permute(1, 2, 0).numpy(), stored, atol=1e-6)
    valid = np.abs(stored).max(-1) > 0
    assert (~valid).any()
    if cache:  # the cache is prepared once and holds the normals
        assert "normal" in ds.prepared.fields
        again = build_dataset(_cfg(tmp_path), "val")
        assert again.prepared.folder == ds.prepared.folder
        assert torch.equal(again[1]["normal"], sample["normal"])


def test_nyuv2_without_the_normal_task_reads_no_normal_files(tmp_path):
    write_nyuv2(tmp_path, "val", frames=1, height=16, width=24)  # no normal/ folder
    ds = NYUv2(tmp_path, "val", height=16, width=24)
    assert "normal" not in ds[0]


def test_a_missing_or_malformed_normal_file_is_named(tmp_path):
    write_nyuv2(tmp_path, "val", frames=2, height=16, width=24, normals=True)
    (tmp_path / "val" / "normal" / "1.npy").unlink()
    with pytest.raises(DatasetError, match=r"normal file of .*1\.npy"):
        NYUv2(tmp_path, "val", height=16, width=24, normals=True)
    np.save(tmp_path / "val" / "normal" / "1.npy", np.full((16, 24, 3), 3.0, np.float32))
    with pytest.raises(DatasetError, match=r"normal/1\.npy: normal components"):
        NYUv2(tmp_path, "val", height=16, width=24, normals=True).decode(1)
    np.save(tmp_path / "val" / "normal" / "1.npy", np.zeros((16, 24), np.float32))
    with pytest.raises(DatasetError, match=r"normal/1\.npy.*HxWx3"):
        NYUv2(tmp_path, "val", height=16, width=24, normals=True).decode(1)


def test_a_dataset_without_normals_refuses_the_task(tmp_path):
    cfg = compose_config(["dataset=cityscapes", f"dataset.root={tmp_path}",
                          "model.tasks=[seg,depth,normal]"])
    with pytest.raises(ConfigError, match="dataset=cityscapes has no normal ground truth"):
        build_dataset(cfg, "val")


def test_synthetic_normals_agree_with_the_synthetic_depth_on_the_ground():
    """Back-project the ground's depth with any focal length and the horizon found from the
    depth itself (1/depth is linear in the row there): the surface it spans faces up, as the
    stored normals say."""
    h, w = 96, 128
    image, seg, depth, valid, normal = render_scene(h, w, np.random.default_rng(3))
    ground = (seg == 0) & valid  # class 0: flat
    rows, cols = np.nonzero(ground)
    slope, intercept = np.polyfit(rows + 0.5, 1.0 / depth[ground], 1)
    horizon = -intercept / slope
    f = 50.0
    v, u = np.mgrid[0:h, 0:w] + 0.5
    z = depth.astype(np.float64)
    points = np.stack([(u - w / 2) * z / f, (horizon - v) * z / f, z], axis=-1)
    du = points[1:-1, 2:] - points[1:-1, :-2]
    dv = points[2:, 1:-1] - points[:-2, 1:-1]
    estimated = np.cross(du, dv)
    estimated /= np.linalg.norm(estimated, axis=-1, keepdims=True) + 1e-12
    inner = ground[1:-1, 1:-1] & ground[2:, 1:-1] & ground[:-2, 1:-1] & ground[1:-1, 2:] \
        & ground[1:-1, :-2]
    agreement = np.abs((estimated * normal[1:-1, 1:-1]).sum(-1))[inner]
    assert inner.sum() > 1000 and np.median(agreement) > 0.999
    np.testing.assert_array_equal(normal[ground], np.tile([0.0, 1.0, 0.0], (ground.sum(), 1)))
    assert (normal[seg == 4] == 0).all()  # the sky has no normal
