"""Cross-stitch under DDP: two gloo processes on CPU train what one process with the same
global batch trains (the stitch units are averaged like any other parameter). The
backbones are TinyBackbone, set in each process before it builds the model."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers.backbones import TinyBackbone
from helpers.config import TINY, compose_config

from xtask_mt.config import build
from xtask_mt.engine import trainer as training
from xtask_mt.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

RUN = [*TINY, "model=cross_stitch", "model.decoder_width=8", "dataset.train_size=4",
       "dataset.val_size=4", "trainer.epochs=2", "weighting=pcgrad", "logger=none"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    build.ResNetEncoder = TinyBackbone
    summary = training.train(compose_config(
        [*RUN, "dataset.batch_size=2", "trainer.strategy=ddp"]), Path(out_dir))
    (Path(out_dir) / f"summary-rank{rank}.json").write_text(json.dumps(summary))


def test_cross_stitch_on_two_processes_matches_one_process_with_the_global_batch(
        tmp_path, monkeypatch):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp_dir.mkdir()
    mp.spawn(_rank_main, nprocs=2, join=True, args=(_free_port(), str(ddp_dir)))
    monkeypatch.setattr(build, "ResNetEncoder", TinyBackbone)
    single = training.train(compose_config([*RUN, "dataset.batch_size=4"]), single_dir)

    rank0 = json.loads((ddp_dir / "summary-rank0.json").read_text())
    rank1 = json.loads((ddp_dir / "summary-rank1.json").read_text())
    assert rank0["final"] == rank1["final"]
    ddp_losses = [e["train/total"] for e in rank0["history"]]
    assert ddp_losses == pytest.approx([e["train/total"] for e in single["history"]], rel=1e-3)
    a = load_checkpoint(ddp_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(single_dir / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    stitch = "encoder.stitch"
    assert not torch.equal(b[stitch], torch.tensor([[0.9, 0.1], [0.1, 0.9]]).expand(5, 2, 2))
    assert torch.allclose(a[stitch], b[stitch], rtol=1e-4, atol=1e-6)
    floats = [k for k in a if a[k].is_floating_point()]
    num = sum(float((a[k] - b[k]).norm() ** 2) for k in floats)
    assert (num / sum(float(b[k].norm() ** 2) for k in floats)) ** 0.5 < 1e-3
