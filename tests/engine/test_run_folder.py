"""What a training job leaves in its folder when things go wrong: files that agree after a
kill, no temp files, one job per folder, readable permissions, a full disk in one line."""

from __future__ import annotations

import errno
import os
import stat
from types import SimpleNamespace

import pytest
from helpers.config import TINY, compose_config

from xtask_mt.engine import checkpoint, trainer
from xtask_mt.engine.checkpoint import (
    DiskFullError,
    load_checkpoint,
    save_checkpoint,
    write_json_atomic,
)
from xtask_mt.engine.trainer import RUN_LOCK, RunDirBusyError, train
from xtask_mt.locks import FileLock


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs."""


def test_a_kill_while_best_pt_is_written_leaves_files_that_agree(tmp_path, monkeypatch):
    save = trainer.save_checkpoint

    def dying(path, payload):
        if path.name == "best.pt":
            raise Killed
        save(path, payload)

    monkeypatch.setattr(trainer, "save_checkpoint", dying)
    cfg = compose_config(TINY + ["trainer.epochs=2"])
    with pytest.raises(Killed):
        train(cfg, tmp_path)
    monkeypatch.setattr(trainer, "save_checkpoint", save)
    summary = train(cfg, tmp_path)
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == summary["best_epoch"] == best["progress"]["best_epoch"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 2


def test_temp_files_of_a_killed_write_are_removed_on_the_next_start(tmp_path):
    left = [tmp_path / "checkpoints" / ".last.pt.k2j3.tmp", tmp_path / ".metrics.json.x.tmp"]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    train(compose_config(TINY), tmp_path)
    assert not any(path.exists() for path in left)
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_second_job_in_a_held_folder_is_refused_and_writes_nothing(tmp_path):
    (tmp_path / ".hydra").mkdir(parents=True)
    with FileLock(tmp_path / RUN_LOCK) as holder:
        assert holder.acquire()
        with pytest.raises(RunDirBusyError, match=f"in use by another training process "
                                                  f"\\(pid {os.getpid()}\\)"):
            train(compose_config(TINY), tmp_path)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()
    train(compose_config(TINY), tmp_path)  # released (as by the holder's death): it runs
    assert (tmp_path / "metrics.json").is_file()


def test_the_holder_puts_back_its_job_config_overwritten_by_a_refused_job(tmp_path,
                                                                          monkeypatch):
    config = tmp_path / ".hydra" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("first: job\n")
    original = trainer.setup

    def overwritten(cfg, output_dir, ctx):  # a second job's Hydra writes while we train
        config.write_text("second: job\n")
        return original(cfg, output_dir, ctx)

    monkeypatch.setattr(trainer, "setup", overwritten)
    train(compose_config(TINY), tmp_path)
    assert config.read_text() == "first: job\n"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o666 & ~umask


def test_a_full_disk_is_one_error_naming_the_file_and_keeps_the_old_one(tmp_path,
                                                                         monkeypatch):
    target = tmp_path / "last.pt"
    write_json_atomic(target, {"epoch": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    with pytest.raises(DiskFullError, match=f"disk full while writing {target} .*the previous "
                                            "last.pt is kept"):
        write_json_atomic(target, {"epoch": 2})
    assert target.read_text() == '{\n  "epoch": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("free", [1024, 10 * 2**30])
def test_a_full_disk_that_torch_reports_without_an_errno_is_the_same_one_error(
        tmp_path, monkeypatch, free):
    """torch's zip writer raises a RuntimeError on a full disk: with next to nothing free it
    is a DiskFullError, the previous file kept; with space free it stays what it is."""
    target = tmp_path / "best.pt"
    save_checkpoint(target, {"epoch": 1})

    def torch_zip_writer_fails(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint.torch, "save", torch_zip_writer_fails)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                        lambda folder: SimpleNamespace(free=free))
    expected = (DiskFullError, "disk full while writing .*the previous best.pt is kept") \
        if free < 2**20 else (RuntimeError, "unexpected pos")
    with pytest.raises(expected[0], match=expected[1]):
        save_checkpoint(target, {"epoch": 2})
    assert load_checkpoint(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]
