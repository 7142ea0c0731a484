"""dataset.device_cache: batches made from a split held on the device equal the DataLoader's
(num_workers=0) for the same seed, epoch after epoch, augmentation included."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from helpers.config import compose_config
from helpers.layouts import write_cityscapes, write_nyuv2
from torch.utils.data import DataLoader

from xtask_mt.config.build import build_dataset, build_loader, cache_on_device
from xtask_mt.config.validate import validate_config
from xtask_mt.data import device_split
from xtask_mt.data.device_loader import DeviceLoader
from xtask_mt.data.transforms import TrainAugmentation, View
from xtask_mt.engine.trainer import train
from xtask_mt.errors import ConfigError
from xtask_mt.sample import IMAGENET_MEAN, IMAGENET_STD

CPU = torch.device("cpu")
SEED = 3
Batch = dict[str, torch.Tensor]


def _cfg(tmp_path, name: str, *extra: str):
    """A tiny config of `name`, with its data written under tmp_path."""
    if name == "cityscapes":
        for split, frames in (("train", 10), ("val", 5)):
            write_cityscapes(tmp_path, split, frames=frames, height=64, width=128,
                             seed=frames)
        size = [f"dataset.root={tmp_path}", "dataset.height=32", "dataset.width=64"]
    elif name == "nyuv2":
        for split, frames in (("train", 10), ("val", 5)):
            write_nyuv2(tmp_path, split, frames=frames, height=24, width=32, seed=frames,
                        normals=True)
        size = [f"dataset.root={tmp_path}", "dataset.height=24", "dataset.width=32",
                "model.tasks=[seg,depth,normal]"]
    else:
        size = ["dataset.height=32", "dataset.width=64", "dataset.train_size=10",
                "dataset.val_size=5", "model.tasks=[seg,depth,normal]"]
    return compose_config([f"dataset={name}", "dataset.batch_size=4", "dataset.num_workers=0",
                           "dataset.device_cache=true", f"trainer.seed={SEED}", *size, *extra])


def _record_views(dataset) -> list[View]:
    """The views the dataset's augmentation draws from now on, in order."""
    views: list[View] = []
    draw = TrainAugmentation.draw

    def recording(height: int, width: int) -> View:
        views.append(draw(dataset.transform, height, width))
        return views[-1]

    dataset.transform.draw = recording
    return views


def _epochs(loader, epochs: int) -> list[list[Batch]]:
    """The batches of each epoch, seeded as the trainer seeds every epoch."""
    out = []
    for epoch in range(1, epochs + 1):
        np.random.seed(SEED + epoch)
        loader.generator.manual_seed(SEED + epoch)
        if hasattr(loader.sampler, "set_epoch"):  # the training loader's
            loader.sampler.set_epoch(epoch)
        out.append(list(loader))
    return out


def _levels(image: torch.Tensor) -> torch.Tensor:
    """Normalised (B, 3, H, W) image -> its 0..255 levels."""
    mean, std = (torch.from_numpy(a)[:, None, None] for a in (IMAGENET_MEAN, IMAGENET_STD))
    return (image * std + mean) * 255


def _assert_same(expected: list[list[Batch]], got: list[list[Batch]], image: str) -> None:
    """Every map equal; the image `exact`, within one uint8 level (`level`: cv2 rounds in
    fixed point) or float rounding (`float`)."""
    assert len(got) == len(expected)
    for epoch_expected, epoch_got in zip(expected, got, strict=True):
        assert len(epoch_got) == len(epoch_expected) > 0
        for a, b in zip(epoch_expected, epoch_got, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
                if key != "image" or image == "exact":
                    assert torch.equal(a[key], b[key]), key
            if image == "level":
                diff = (_levels(a["image"]) - _levels(b["image"])).abs()
                assert diff.max() <= 1.0 + 1e-3 and (diff > 0.5).float().mean() < 0.25
            elif image == "float":
                torch.testing.assert_close(b["image"], a["image"], atol=1e-5, rtol=0)


def _loaders(cfg, split: str, rank: int = 0, world_size: int = 1):
    """The DataLoader of `split` and the device loader built from it."""
    dataset = build_dataset(cfg, split)
    loader = build_loader(cfg, dataset, split == "train", rank, world_size)
    (device_loader,) = cache_on_device(cfg, CPU, build_loader(cfg, dataset, split == "train",
                                                              rank, world_size))
    assert isinstance(device_loader, DeviceLoader)
    assert len(device_loader) == len(loader)
    return dataset, loader, device_loader


@pytest.mark.parametrize(("name", "image"), [("cityscapes", "level"), ("nyuv2", "float")])
def test_augmented_batches_equal_the_dataloaders(tmp_path, name, image):
    cfg = _cfg(tmp_path, name, "dataset.augment.scales=[1.0,1.25,1.5]")
    dataset, loader, device_loader = _loaders(cfg, "train")
    views = _record_views(dataset)
    expected = _epochs(loader, 3)
    cpu_views = list(views)
    views.clear()
    got = _epochs(device_loader, 3)
    assert views == cpu_views  # the same draws, in the same order
    assert {v.scale for v in views} == {1.0, 1.25, 1.5}
    assert 0 < sum(v.flipped for v in views) < len(views)
    _assert_same(expected, got, image)
    if name == "nyuv2":  # flipped normals negate x: the device path applied the rule
        assert any((b["normal"][:, 0] < 0).any() for epoch in got for b in epoch)


@pytest.mark.parametrize("name", ["cityscapes", "nyuv2", "synthetic"])
def test_validation_batches_equal_the_dataloaders(tmp_path, name):
    cfg = _cfg(tmp_path, name)
    _, loader, device_loader = _loaders(cfg, "val")
    assert len(device_loader) == math.ceil(5 / 4)  # the last, partial batch is kept
    _assert_same(_epochs(loader, 2), _epochs(device_loader, 2), "exact")


def test_synthetic_training_batches_equal_the_dataloaders(tmp_path):
    cfg = _cfg(tmp_path, "synthetic")
    dataset, loader, device_loader = _loaders(cfg, "train")
    expected, got = _epochs(loader, 2), _epochs(device_loader, 2)
    _assert_same(expected, got, "exact")
    assert "normal" in got[0][0]
    assert not torch.equal(got[0][0]["seg"], got[1][0]["seg"])  # shuffled per epoch


def test_ddp_ranks_get_the_dataloaders_shards(tmp_path):
    cfg = _cfg(tmp_path, "cityscapes")
    seen = []
    for rank in (0, 1):
        for split in ("train", "val"):
            _, loader, device_loader = _loaders(cfg, split, rank, world_size=2)
            _assert_same(_epochs(loader, 2), _epochs(device_loader, 2),
                         "level" if split == "train" else "exact")
            if split == "val":
                seen += [seg for batch in device_loader for seg in batch["seg"]]
    whole = build_dataset(cfg, "val")
    frames = [whole[i]["seg"] for i in range(len(whole))]
    assert len(seen) == len(frames)  # each frame on exactly one rank
    assert all(sum(torch.equal(s, f) for s in seen) == 1 for f in frames)


def test_one_copy_for_loaders_of_one_dataset(tmp_path):
    cfg = _cfg(tmp_path, "synthetic")
    dataset = build_dataset(cfg, "train")
    a, b = cache_on_device(cfg, CPU, build_loader(cfg, dataset, True),
                           build_loader(cfg, dataset, False))
    assert a.split is b.split
    off = _cfg(tmp_path, "synthetic", "dataset.device_cache=false")
    assert isinstance(cache_on_device(off, CPU, build_loader(off, dataset, True))[0], DataLoader)


def test_a_file_dataset_without_its_preparation_cache_is_refused(tmp_path):
    cfg = _cfg(tmp_path, "cityscapes", "dataset.cache=false")
    with pytest.raises(ConfigError, match="set dataset.cache=true"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match="set dataset.cache=true"):
        cache_on_device(cfg, CPU, build_loader(cfg, build_dataset(cfg, "val"), False))
    validate_config(_cfg(tmp_path, "synthetic"))  # rendered in memory: no cache needed


def test_device_cache_must_be_a_boolean(tmp_path):
    with pytest.raises(ConfigError, match="dataset.device_cache='yes'"):
        validate_config(_cfg(tmp_path, "synthetic", "dataset.device_cache=yes"))


def test_a_split_larger_than_the_free_memory_is_refused(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "cityscapes")
    loader = build_loader(cfg, build_dataset(cfg, "train"), True)
    assert device_split.free_memory(CPU) > 0
    monkeypatch.setattr(device_split, "free_memory", lambda device: 10_000)
    with pytest.raises(ConfigError) as caught:
        cache_on_device(cfg, CPU, loader)
    message = str(caught.value)
    assert "train split of cityscapes" in message and "0.00 GiB free" in message
    assert "set dataset.device_cache=false" in message and "\n" not in message


def test_training_with_device_cache(tmp_path, caplog):
    """Augmented Cityscapes-layout batches from the device cache through a whole job."""
    caplog.set_level(logging.INFO, logger="xtask_mt")
    cfg = _cfg(tmp_path / "data", "cityscapes", "encoder=resnet18", "model.decoder_width=16",
               "trainer.device=cpu", "trainer.progress_bar=false", "dataset.num_workers=2",
               "trainer.epochs=1")
    summary = train(cfg, tmp_path / "run")
    assert summary["epochs_run"] == [1]
    assert summary["final"] and all(math.isfinite(v) for v in summary["final"].values())
    assert summary["train"] and all(math.isfinite(v) for v in summary["train"].values())
    notes = [r.getMessage() for r in caplog.records if "dataset.device_cache" in r.getMessage()]
    assert len(notes) == 1 and "dataset.num_workers=2 is ignored" in notes[0]
