"""Freed tensor memory is reused instead of being faulted in again on every allocation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import TINY, compose_config
from xtask_mt.engine import training

# Allocates, fills and frees a 64 MiB tensor repeatedly and reports the minor page faults
# of the last allocations; with `retain`, once the heap has grown (glibc needs a few rounds
# to coalesce the freed blocks) the pages are reused.
_PROBE = """
import json, resource, sys
import torch
from xtask_mt.engine.host_memory import retain_freed_host_memory
applied = retain_freed_host_memory() if sys.argv[1] == "retain" else False
for _ in range(8):
    torch.empty(16 * 2**20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.empty(16 * 2**20).fill_(1.0)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                          check=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc (Linux)")
def test_retained_memory_avoids_page_faults():
    plain, retained = _probe("plain"), _probe("retain")
    assert retained["applied"] is True
    # 5 x 64 MiB freshly mapped is about 80k faults of 4 KiB pages
    assert plain["faults"] > 20_000, plain
    assert retained["faults"] < plain["faults"] / 10, (plain, retained)


@pytest.mark.parametrize("retain", [True, False])
def test_cpu_training_retains_host_memory_only_when_asked(tmp_path, monkeypatch, retain):
    calls: list[bool] = []
    monkeypatch.setattr(training, "retain_freed_host_memory", lambda: calls.append(True) or True)
    training.train(compose_config(TINY + [f"trainer.retain_host_memory={retain}"]), tmp_path)
    assert calls == ([True] if retain else [])
