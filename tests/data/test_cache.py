"""The preparation cache: equal to raw decoding, keyed by what it depends on, never
half-written."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch
from helpers.config import ROOT
from helpers.layouts import write_cityscapes, write_nyuv2

from xtask_mt.data.cache import cache_path, prepare
from xtask_mt.data.cityscapes import Cityscapes
from xtask_mt.data.nyuv2 import NYUv2


def _datasets(tmp_path, kind: str, **kwargs):
    data = tmp_path / "data"
    if kind == "cityscapes":
        write_cityscapes(data, "train", frames=3, height=64, width=128)
        make = Cityscapes
    else:
        write_nyuv2(data, "train", frames=3, height=48, width=64)
        make = NYUv2
    raw = make(data, "train", height=32, width=64, **kwargs)
    cached = make(data, "train", height=32, width=64, cache_dir=tmp_path / "cache",
                  progress=False, **kwargs)
    return raw, cached


@pytest.mark.parametrize("kind", ["cityscapes", "nyuv2"])
def test_cache_equals_raw_decoding(tmp_path, kind):
    raw, cached = _datasets(tmp_path, kind)
    assert cached.prepared is not None and raw.prepared is None
    cached.frame(0)
    assert all(isinstance(a, np.memmap) for a in cached.prepared._arrays.values())
    for i in range(len(raw)):
        a, b = raw.decode(i), cached.frame(i)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        for key, value in raw[i].items():
            assert torch.equal(value, cached[i][key]), key


def test_cache_rebuilt_when_a_parameter_changes(tmp_path):
    data = tmp_path / "data"
    paths = write_cityscapes(data, "train", frames=2, height=32, width=64)
    cache = tmp_path / "cache"
    first = Cityscapes(data, "train", 7, 32, 64, cache_dir=cache, progress=False)
    folder = first.prepared.folder
    mtime = (folder / "meta.json").stat().st_mtime_ns
    again = Cityscapes(data, "train", 7, 32, 64, cache_dir=cache, progress=False)
    assert again.prepared.folder == folder  # reused, not rebuilt
    assert (folder / "meta.json").stat().st_mtime_ns == mtime

    other = {Cityscapes(data, "train", 19, 32, 64, cache_dir=cache,
                        progress=False).prepared.folder,
             Cityscapes(data, "train", 7, 16, 32, cache_dir=cache,
                        progress=False).prepared.folder}
    assert folder not in other and len(other) == 2

    # A changed source file makes the old cache stale: the new one holds the new content.
    raw = (np.arange(32 * 64).reshape(32, 64) % 60000 + 2).astype(np.uint16)
    cv2.imwrite(str(paths[0]["disparity"]), raw)
    os.utime(paths[0]["disparity"], ns=(1, 1))
    changed = Cityscapes(data, "train", 7, 32, 64, cache_dir=cache, progress=False)
    assert changed.prepared.folder != folder
    np.testing.assert_array_equal(changed.frame(0)["depth"], changed.decode(0)["depth"])
    assert not np.array_equal(changed.frame(0)["depth"], first.frame(0)["depth"])

    # A frame added to the split changes the key as well.
    write_cityscapes(data, "train", frames=3, height=32, width=64, cities=("zurich",))
    grown = Cityscapes(data, "train", 7, 32, 64, cache_dir=cache, progress=False)
    assert len(grown) == 5 and grown.prepared.folder not in {folder, changed.prepared.folder}


def test_interrupted_preparation_leaves_no_valid_cache(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_cityscapes(data, "train", frames=4, height=32, width=64)
    decode = Cityscapes.decode

    def failing(self, index):
        if index == 2:
            raise KeyboardInterrupt
        return decode(self, index)

    monkeypatch.setattr(Cityscapes, "decode", failing)
    with pytest.raises(KeyboardInterrupt):
        Cityscapes(data, "train", height=32, width=64, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []  # neither a final folder nor a partial one is left
    monkeypatch.setattr(Cityscapes, "decode", decode)
    ds = Cityscapes(data, "train", height=32, width=64, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(ds.frame(3)["seg"], ds.decode(3)["seg"])


@pytest.mark.parametrize("damage", ["meta", "array"])
def test_damaged_cache_is_prepared_again(tmp_path, damage):
    data, cache = tmp_path / "data", tmp_path / "cache"
    write_cityscapes(data, "train", frames=2, height=32, width=64)
    ds = Cityscapes(data, "train", height=32, width=64, cache_dir=cache, progress=False)
    folder = ds.prepared.folder
    if damage == "meta":
        meta = json.loads((folder / "meta.json").read_text())
        meta["length"] = 99
        (folder / "meta.json").write_text(json.dumps(meta))
    else:
        (folder / "depth.npy").write_bytes(b"\x93NUMPY")
    assert cache_path(ds, cache) == folder
    assert prepare(ds, cache, progress=False) == folder
    again = Cityscapes(data, "train", height=32, width=64, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again.frame(1)["depth"], again.decode(1)["depth"])


def test_bad_frame_stops_preparation_and_names_it(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    paths = write_cityscapes(data, "train", frames=3, height=32, width=64)
    paths[2]["image"].write_bytes(b"broken")
    with pytest.raises(ValueError, match=paths[2]["image"].name):
        Cityscapes(data, "train", height=32, width=64, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_prepare_command(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    import prepare as command

    data = tmp_path / "nyu"
    write_nyuv2(data, "train", frames=2, height=24, width=32)
    write_nyuv2(data, "val", frames=1, height=24, width=32)
    args = ["dataset=nyuv2", f"dataset.root={data}", "dataset.height=32", "dataset.width=32",
            "dataset.cache=false"]
    assert command.main(args) == 0
    out = capsys.readouterr().out
    assert "train: 2 frames prepared" in out and "val: 1 frames prepared" in out
    assert len(list((data / "prepared").glob("nyuv2-*"))) == 2
    assert command.main([*args, f"dataset.root={tmp_path / 'missing'}"]) == 2
    assert "NYUv2 root (dataset.root) not found" in capsys.readouterr().err
    # the same checks as train.py: a size train.py refuses is not prepared
    assert command.main([*args, "dataset.height=100"]) == 2
    assert "dataset.height=100: expected a positive integer divisible by 32" in \
        capsys.readouterr().err
    assert len(list((data / "prepared").glob("nyuv2-*"))) == 2


def test_partials_of_a_killed_preparation_are_removed_and_live_ones_kept(tmp_path):
    """kill -9 leaves a .partial-* folder behind; the next preparation removes it unless a
    live preparation still holds its lock."""
    from xtask_mt.locks import FileLock

    data, cache = tmp_path / "data", tmp_path / "cache"
    write_cityscapes(data, "train", frames=2, height=32, width=64)
    dead = cache / ".partial-train-dead"
    (dead / "seg.npy").parent.mkdir(parents=True)
    (dead / "seg.npy").write_bytes(b"half")
    os.utime(dead, (1, 1))  # old, and no lock file: an older kill
    held = cache / ".partial-train-live"
    held.mkdir()
    with FileLock(held / ".lock") as lock:
        assert lock.acquire()
        Cityscapes(data, "train", height=32, width=64, cache_dir=cache, progress=False)
        assert not dead.exists()
        assert held.exists()
    finals = [p for p in cache.iterdir() if not p.name.startswith(".partial")]
    assert finals and not any((f / ".lock").exists() for f in finals)
