"""Where a sweep's jobs are: the folders Hydra wrote a .hydra/ into, in natural order."""

from __future__ import annotations

import re
from pathlib import Path


def natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


# folders that hold copies of a job's .hydra/ but are no job: W&B's saved run files
_NOT_JOBS = ("wandb",)


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Job output dirs under `sweep_dir`: those Hydra wrote a `.hydra/` folder into (not the
    copies W&B keeps of it under a job's wandb/)."""
    dirs = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")
            if not set(p.relative_to(sweep_dir).parts) & set(_NOT_JOBS)}
    dirs.discard(sweep_dir)
    return sorted(dirs, key=lambda p: natural_key(str(p.relative_to(sweep_dir))))
