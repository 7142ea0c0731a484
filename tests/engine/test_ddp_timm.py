"""DDP with a timm trunk: 2 gloo processes x batch 2 train what 1 process x batch 4 trains.

RegNetX-200MF fuses BatchNorm and activation (timm's BatchNormAct2d), so this also checks
that the global-batch BatchNorm keeps the activation."""

from __future__ import annotations

import json

import pytest
from helpers.config import TINY
from test_ddp import RUN, _ddp_and_single, _params, _relative_error

pytestmark = pytest.mark.slow

TIMM = [o for o in TINY if not o.startswith("encoder=")] + ["encoder=timm",
                                                              "encoder.name=regnetx_002"]


def test_two_gloo_processes_match_one_process_with_a_timm_trunk(tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    single = _ddp_and_single(TIMM + RUN, ddp_dir, single_dir)
    rank0 = json.loads((ddp_dir / "summary-rank0.json").read_text())
    rank1 = json.loads((ddp_dir / "summary-rank1.json").read_text())
    assert rank0["final"] == rank1["final"]
    ddp_losses = [e["train/total"] for e in rank0["history"]]
    single_losses = [e["train/total"] for e in single["history"]]
    assert ddp_losses[0] == pytest.approx(single_losses[0], rel=1e-5)
    assert ddp_losses == pytest.approx(single_losses, rel=1e-3)
    for key in ("val/miou", "val/abs_err"):
        assert rank0["final"][key] == pytest.approx(single["final"][key], rel=2e-3, abs=1e-4)
    a, b = _params(ddp_dir / "checkpoints" / "last.pt"), _params(
        single_dir / "checkpoints" / "last.pt")
    assert a.keys() == b.keys()
    assert any(".stem.bn." in k for k in a)  # the fused BatchNorm layers were trained
    floats = [k for k in a if a[k].is_floating_point()]
    assert _relative_error(a, b, floats) < 1e-3
