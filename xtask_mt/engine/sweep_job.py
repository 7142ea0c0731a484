"""One training job as a sweep sees it: skipped when already finished, its outcome recorded.

Each job dir gets `job.json` ({"status": "finished" | "failed" | "interrupted", "overrides",
"tags", "error"}) so a sweep report can tell failed jobs from finished ones, and a re-run of
the same sweep (same `hydra.sweep.dir`) skips the jobs that already wrote `metrics.json`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from xtask_mt.engine.checkpoint import write_atomic, write_json_atomic
from xtask_mt.engine.trainer import RunDirBusyError, train
from xtask_mt.errors import UserError
from xtask_mt.runtime.preemption import TrainingInterrupted

log = logging.getLogger(__name__)

STATUS_FILE = "job.json"
# Overrides that change how a job is watched, not what it computes.
_NEUTRAL_OVERRIDES = ("logger", "trainer.progress_bar", "trainer.skip_finished",
                      "dataset.num_workers", "trainer.device")


def job_overrides() -> list[str]:
    """The running Hydra job's command-line and sweep overrides ([] outside Hydra)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _relevant(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides
                  if not o.lstrip("+~").split("=")[0].startswith(_NEUTRAL_OVERRIDES))


def finished_summary(output_dir: Path, overrides: list[str]) -> dict[str, Any] | None:
    """metrics.json of a job that already finished in `output_dir` with the same overrides,
    None if nothing finished there; an error if a different job finished there."""
    metrics = output_dir / "metrics.json"
    if not metrics.is_file():
        return None
    status = output_dir / STATUS_FILE
    if status.is_file():
        recorded = json.loads(status.read_text()).get("overrides", [])
        if _relevant(recorded) != _relevant(overrides):
            raise UserError(
                f"{output_dir} already holds a finished job with other overrides "
                f"({' '.join(recorded) or 'none'}; this job: {' '.join(overrides) or 'none'}). "
                "Its results are kept: run this sweep with a new hydra.sweep.dir, or set "
                "trainer.skip_finished=false to overwrite them.")
    return json.loads(metrics.read_text())


def _adapt_to_joblib(cfg: DictConfig, output_dir: Path) -> None:
    """joblib runs jobs in its own worker processes, where DataLoader worker processes are
    fragile (hangs, daemonic-process errors) and parallel progress bars garble the console:
    there, load data in the job's process and leave progress to train.log, and record the
    settings really used in the job's .hydra/config.yaml."""
    if not HydraConfig.initialized():
        return
    target = str(HydraConfig.get().launcher.get("_target_", ""))
    if "joblib" not in target.lower():
        return
    log.info("hydra/launcher=joblib: %d torch thread(s) in this job (joblib caps each "
             "worker's threads at the CPU count / n_jobs)", torch.get_num_threads())
    changed = {}
    if int(cfg.dataset.num_workers) != 0:
        log.warning("hydra/launcher=joblib: using dataset.num_workers=0 instead of %d (use "
                    "hydra/launcher=submitit_local for parallel jobs with loader workers)",
                    int(cfg.dataset.num_workers))
        changed["dataset.num_workers"] = 0
    if bool(cfg.trainer.get("progress_bar", True)):
        changed["trainer.progress_bar"] = False  # parallel bars garble the console
    for key, value in changed.items():
        OmegaConf.update(cfg, key, value)
    saved = output_dir / ".hydra" / "config.yaml"
    if changed and saved.is_file():
        recorded = OmegaConf.load(saved)
        for key, value in changed.items():
            OmegaConf.update(recorded, key, value)
        write_atomic(saved, lambda f: f.write(OmegaConf.to_yaml(recorded).encode()))


def _threads_from_launcher() -> None:
    """A submitit launcher (submitit_local, slurm) gives each job `cpus_per_task` CPUs but
    torch would start a thread per core of the machine: jobs that run side by side would then
    oversubscribe it. Use that many threads."""
    if not HydraConfig.initialized():
        return
    launcher = HydraConfig.get().launcher
    cpus = launcher.get("cpus_per_task") if "submitit" in str(
        launcher.get("_target_", "")).lower() else None
    if cpus:
        torch.set_num_threads(int(cpus))
        log.info("hydra.launcher.cpus_per_task=%d: %d torch threads in this job", int(cpus),
                 torch.get_num_threads())


def run_training_job(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Train unless this job already finished in `output_dir`; record the outcome in job.json.

    Returns the metrics.json summary (the stored one when skipped).
    """
    output_dir = Path(output_dir)
    overrides = job_overrides()
    tags = [str(tag) for tag in cfg.get("tags") or []]
    if cfg.trainer.get("skip_finished", True):
        summary = finished_summary(output_dir, overrides)
        if summary is not None:
            log.info("%s already finished (metrics.json present): skipped. Delete it or set "
                     "trainer.skip_finished=false to train again.", output_dir)
            return summary
    _adapt_to_joblib(cfg, output_dir)
    _threads_from_launcher()
    try:
        summary = train(cfg, output_dir)
    except RunDirBusyError:
        raise  # the folder is another live job's: write nothing into it
    except BaseException as exc:
        output_dir.mkdir(parents=True, exist_ok=True)
        interrupted = isinstance(exc, KeyboardInterrupt | TrainingInterrupted)
        status = "interrupted" if interrupted else "failed"
        write_json_atomic(output_dir / STATUS_FILE, {
            "status": status, "overrides": overrides, "tags": tags,
            "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500]})
        raise
    write_json_atomic(output_dir / STATUS_FILE, {"status": "finished", "overrides": overrides,
                                                 "tags": tags})
    return summary
