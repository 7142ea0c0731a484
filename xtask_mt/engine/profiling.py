"""trainer.profile: run the training loop under torch.profiler (debug=profile keeps it to a
few steps) and leave its key-averages table and a Chrome trace in <output dir>/profile/."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

log = logging.getLogger(__name__)

PROFILE_DIR = "profile"
TABLE_FILE = "key_averages.txt"
TRACE_FILE = "trace.json"
TABLE_ROWS = 30


@contextmanager
def profiled(enabled: bool, output_dir: Path, device: torch.device) -> Iterator[None]:
    """Profile the code inside when `enabled`; afterwards log the operators that took the
    most time and write the table and the trace (open it in chrome://tracing or Perfetto)."""
    if not enabled:
        yield
        return
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as profiler:
        yield
    folder = Path(output_dir) / PROFILE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    table = profiler.key_averages().table(
        sort_by="self_device_time_total" if cuda else "self_cpu_time_total",
        row_limit=TABLE_ROWS)
    (folder / TABLE_FILE).write_text(table)
    profiler.export_chrome_trace(str(folder / TRACE_FILE))
    log.info("torch.profiler, operators by own time (table and trace in %s):\n%s",
             folder, table)
