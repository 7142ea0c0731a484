"""One training job as a sweep sees it: skipped when already finished, its outcome recorded.

Each job dir gets `job.json` ({"status": "finished" | "failed" | "interrupted", "overrides",
"tags", "device", "slot", "error"}) so a sweep report can tell failed jobs from finished ones
and where each ran, and a re-run of the same sweep (same `hydra.sweep.dir`) skips the jobs that
already wrote `metrics.json`. Under a local launcher each job trains on the GPU of the slot it
takes (conf/placement, runtime.placement).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from xtask_mt.config.build import resolve_device
from xtask_mt.engine.checkpoint import write_atomic, write_json_atomic
from xtask_mt.engine.early_stopping import EarlyStopping
from xtask_mt.engine.job_config import (
    FinishedJobError,
    keep_finished_copy,
    restore_finished_copy,
)
from xtask_mt.engine.trainer import RunDirBusyError, train
from xtask_mt.runtime.placement import SLOTS_DIR, GpuSlots, HeldSlot, PlacementSettings
from xtask_mt.runtime.preemption import TrainingInterrupted

log = logging.getLogger(__name__)

STATUS_FILE = "job.json"
# Overrides that change how a job is watched, not what it computes.
_NEUTRAL_OVERRIDES = ("logger", "trainer.progress_bar", "trainer.skip_finished",
                      "dataset.num_workers", "trainer.device", "placement")
# Launchers that run a sweep's jobs on this machine, where GPU placement applies (a SLURM job
# has its own GPU): Hydra's basic one, joblib (local_parallel), submitit's local executor.
_LOCAL_LAUNCHERS = (".basic_launcher.BasicLauncher", ".joblib_launcher.JoblibLauncher",
                    ".submitit_launcher.LocalLauncher")


def job_overrides() -> list[str]:
    """The running Hydra job's command-line and sweep overrides ([] outside Hydra)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


# Overrides of how long a job trains: a job that stopped early trains on when they let it.
_LENGTH_OVERRIDES = ("trainer.early_stopping",)


def _relevant(overrides: list[str], also_ignored: tuple[str, ...] = ()) -> list[str]:
    ignored = _NEUTRAL_OVERRIDES + also_ignored
    return sorted(o for o in overrides if not o.lstrip("+~").split("=")[0].startswith(ignored))


def trains_on(summary: dict[str, Any], cfg: DictConfig | None) -> bool:
    """Whether a job that stopped early (`summary`, its metrics.json) would not stop under
    `cfg`'s early stopping (a larger patience, or none), so a re-run resumes it."""
    if cfg is None or summary.get("stopped_early") is None:
        return False
    stale = int(summary.get("stale_validations", 0))
    return stale > 0 and not EarlyStopping.from_config(cfg.trainer).should_stop(stale)


def finished_summary(output_dir: Path, overrides: list[str],
                     cfg: DictConfig | None = None) -> dict[str, Any] | None:
    """metrics.json of a job that already finished in `output_dir` with the same overrides,
    None if nothing finished there or if it stopped early and `cfg` lets it train on; an
    error if a different job finished there."""
    metrics = output_dir / "metrics.json"
    if not metrics.is_file():
        return None
    status = output_dir / STATUS_FILE
    if status.is_file():
        recorded = json.loads(status.read_text()).get("overrides", [])
        if _relevant(recorded, _LENGTH_OVERRIDES) != _relevant(overrides, _LENGTH_OVERRIDES):
            raise FinishedJobError(
                f"{output_dir} already holds a finished job with other overrides "
                f"({' '.join(recorded) or 'none'}; this job: {' '.join(overrides) or 'none'}). "
                "Its results are kept: run this sweep with a new hydra.sweep.dir, or set "
                "trainer.skip_finished=false to overwrite them.")
    summary = json.loads(metrics.read_text())
    if trains_on(summary, cfg):
        log.info("%s stopped early after epoch %d; trainer.early_stopping now lets it train on",
                 output_dir, summary["stopped_early"])
        return None
    return summary


def _adapt_to_joblib(cfg: DictConfig, output_dir: Path) -> None:
    """joblib runs jobs in its own worker processes, where DataLoader worker processes are
    fragile (hangs, daemonic-process errors) and parallel progress bars garble the console:
    there, load data in the job's process and leave progress to train.log, and record the
    settings really used in the job's .hydra/config.yaml."""
    if not HydraConfig.initialized():
        return
    if "joblib" not in _launcher_target().lower():
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
    _change_config(cfg, output_dir, changed)


def _change_config(cfg: DictConfig, output_dir: Path, changed: dict[str, Any]) -> None:
    """Set `changed` (dotted keys) in the job's config and in its saved .hydra/config.yaml,
    so that both (and W&B, which logs the config) say what the job really ran with."""
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
    cpus = HydraConfig.get().launcher.get("cpus_per_task") \
        if "submitit" in _launcher_target().lower() else None
    if cpus:
        torch.set_num_threads(int(cpus))
        log.info("hydra.launcher.cpus_per_task=%d: %d torch threads in this job", int(cpus),
                 torch.get_num_threads())


def _launcher_target() -> str:
    return str(HydraConfig.get().launcher.get("_target_", ""))


def _placed_here(cfg: DictConfig) -> bool:
    """Whether this job takes a GPU slot: a multirun job under a local launcher, on a machine
    with CUDA, whose trainer.device leaves the GPU open (auto or cuda) and that is not one
    process of a DDP job."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    if not _launcher_target().endswith(_LOCAL_LAUNCHERS):
        return False
    device = str(cfg.trainer.device)
    if device not in ("auto", "cuda") or str(cfg.trainer.get("strategy", "none")) != "none":
        return False
    if not torch.cuda.is_available():
        if _launcher_target().endswith(".LocalLauncher") \
                and os.environ.get("CUDA_VISIBLE_DEVICES") == "":
            log.info("hydra/launcher=local_submitit with gpus_per_node=0 hides every GPU from "
                     "its jobs (CUDA_VISIBLE_DEVICES=''): this job runs on the CPU; set "
                     "hydra.launcher.gpus_per_node to the machine's GPU count to place jobs "
                     "on GPUs")
        return False
    return True


@contextmanager
def _gpu_slot(cfg: DictConfig, output_dir: Path) -> Iterator[HeldSlot | None]:
    """Hold a GPU slot of the sweep while the job runs (None when not placed) and make its
    GPU the job's device: torch.cuda.set_device and trainer.device=cuda:N, not
    CUDA_VISIBLE_DEVICES, because a joblib worker runs job after job in one process and may
    have initialised CUDA in an earlier one."""
    if not _placed_here(cfg):
        yield None
        return
    settings = PlacementSettings.from_config(cfg.placement)
    hc = HydraConfig.get()
    slots = GpuSlots(Path(hc.sweep.dir).resolve() / SLOTS_DIR,
                     settings.devices(torch.cuda.device_count()), settings.jobs_per_gpu)
    with slots.take(int(hc.job.num)) as held:
        torch.cuda.set_device(held.slot.gpu)
        log.info(held.slot.describe())
        _change_config(cfg, output_dir, {"trainer.device": held.slot.device})
        try:
            yield held
        finally:  # a reused worker would keep this job's cached memory on the GPU it leaves
            torch.cuda.empty_cache()


def _where(cfg: DictConfig, held: HeldSlot | None) -> dict[str, Any]:
    """job.json's record of where the job ran: its device, and its slot when placed."""
    if held is not None:
        return {"device": held.slot.device, "slot": held.slot.index}
    try:
        return {"device": str(resolve_device(str(cfg.trainer.device)))}
    except ValueError:  # no CUDA for trainer.device=cuda: train() reports it
        return {"device": str(cfg.trainer.device)}


def run_training_job(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Train unless this job already finished in `output_dir`; record the outcome in job.json.

    Returns the metrics.json summary (the stored one when skipped).
    """
    output_dir = Path(output_dir)
    overrides = job_overrides()
    tags = [str(tag) for tag in cfg.get("tags") or []]
    record: dict[str, Any] = {"overrides": overrides, "tags": tags}
    try:
        if cfg.trainer.get("skip_finished", True):
            summary = finished_summary(output_dir, overrides, cfg)
            if summary is not None:
                log.info("%s already finished (metrics.json present): skipped. Delete it or "
                         "set trainer.skip_finished=false to train again.", output_dir)
                return summary
        _adapt_to_joblib(cfg, output_dir)
        _threads_from_launcher()
        with _gpu_slot(cfg, output_dir) as held:
            record.update(_where(cfg, held))
            summary = train(cfg, output_dir)
    except RunDirBusyError:
        raise  # the folder is another live job's: write nothing into it
    except FinishedJobError:
        restore_finished_copy(output_dir)  # the folder stays the finished job's
        raise
    except BaseException as exc:
        output_dir.mkdir(parents=True, exist_ok=True)
        interrupted = isinstance(exc, KeyboardInterrupt | TrainingInterrupted)
        status = "interrupted" if interrupted else "failed"
        write_json_atomic(output_dir / STATUS_FILE, {
            "status": status, **record,
            "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500]})
        raise
    write_json_atomic(output_dir / STATUS_FILE, {"status": "finished", **record})
    keep_finished_copy(output_dir)
    return summary
