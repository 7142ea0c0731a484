"""train.py as a user runs it, for the end-to-end sweep tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers.config import ROOT


def run_train(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python train.py *args` from the repository root; W&B offline, one thread per job
    (tiny models gain nothing from more, and a sweep's jobs share the CPU)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def metrics(job: Path) -> dict:
    """The job's metrics.json."""
    return json.loads((job / "metrics.json").read_text())
