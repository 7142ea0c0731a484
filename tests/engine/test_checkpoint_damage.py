"""A damaged checkpoint is refused in one line, never loaded with silently wrong weights."""

from __future__ import annotations

import random

import pytest
import torch
from helpers.config import TINY, compose_config

from xtask_mt.engine.checkpoint import CheckpointError, load_checkpoint
from xtask_mt.engine.trainer import train


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("run")
    train(compose_config(TINY + ["model.decoder_width=16"]), folder)
    return (folder / "checkpoints" / "last.pt").read_bytes()


def test_every_flipped_bit_is_refused_or_changes_nothing(tmp_path, checkpoint_bytes):
    reference = load_checkpoint_from(tmp_path / "ok.pt", checkpoint_bytes)
    rng = random.Random(0)
    refused = 0
    damaged = bytearray(checkpoint_bytes)
    for trial in range(120):
        at, bit = rng.randrange(len(damaged)), 1 << rng.randrange(8)
        damaged[at] ^= bit
        path = tmp_path / f"flip{trial}.pt"
        try:
            loaded = load_checkpoint_from(path, damaged)
        except CheckpointError as exc:
            assert str(path) in str(exc)
            refused += 1
            continue
        finally:  # the intact bytes again, and no pile of damaged copies on the disk
            damaged[at] ^= bit
            path.unlink()
        # a flip the archive's checks cannot see must be one that changed nothing we read
        for key, value in reference["model"].items():
            assert torch.equal(loaded["model"][key], value), (trial, key)
        assert loaded["progress"] == reference["progress"]
    assert refused > 60  # nearly every byte of the file is data the CRCs cover


def load_checkpoint_from(path, data: bytes | bytearray) -> dict:
    path.write_bytes(data)
    return load_checkpoint(path)
