"""Freed tensor memory is reused instead of being faulted in again on every allocation."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest
from helpers.config import TINY, compose_config

from xtask_mt.engine import trainer as training
from xtask_mt.runtime import host_memory

# Allocates, fills and frees a 64 MiB tensor repeatedly and reports the minor page faults
# of each of the last allocations. With `retain`, once the heap has grown (glibc takes a few
# rounds to coalesce the freed blocks) most allocations reuse pages that are already mapped.
_PROBE = """
import json, resource, sys
import torch
from xtask_mt.runtime.host_memory import retain_freed_host_memory
applied = retain_freed_host_memory() if sys.argv[1] == "retain" else False
for _ in range(8):
    torch.empty(16 * 2**20).fill_(1.0)
faults = []
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 * 2**20).fill_(1.0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
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
    # a freshly mapped 64 MiB is 16384 faults of 4 KiB pages
    assert statistics.median(plain["faults"]) > 10_000, plain
    assert statistics.median(retained["faults"]) < 1_000, (plain, retained)


@pytest.mark.parametrize("retain", [True, False])
def test_cpu_training_retains_host_memory_only_when_asked(tmp_path, monkeypatch, retain):
    calls: list[bool] = []
    monkeypatch.setattr(host_memory, "retain_freed_host_memory", lambda: calls.append(True) or True)
    training.train(compose_config(TINY + [f"trainer.retain_host_memory={retain}"]), tmp_path)
    assert calls == ([True] if retain else [])
