"""A whole training run: build from the config, train, validate, checkpoint, summarise,
and resume from the last checkpoint after an interruption.

The run is a few named parts: `setup` builds everything, `resume` restores a checkpoint,
`train_epoch` runs one epoch, `validate` does the validation and best-checkpoint
bookkeeping, and `finish` writes the summary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from xtask_mt.config.build import (
    build_dataset,
    build_loader,
    build_metrics,
    build_model,
    build_objective,
    build_optimizer,
    build_scheduler,
    build_weighting,
    cache_on_device,
    resolve_device,
    seed_everything,
)
from xtask_mt.config.schedules import restore_lr_schedule
from xtask_mt.config.tree import TREE_FILE, config_tree
from xtask_mt.config.validate import validate_config, validation_metric_names
from xtask_mt.data.splits import TRAIN, VAL
from xtask_mt.engine.batch_limits import train_batches, val_batches
from xtask_mt.engine.checkpoint import (
    CheckpointError,
    check_model_spec,
    check_training_settings,
    load_checkpoint,
    model_spec,
    remove_stale_temp_files,
    save_checkpoint,
    write_atomic,
    write_json_atomic,
)
from xtask_mt.engine.distillation import build_distillation
from xtask_mt.engine.early_stopping import EarlyStopping, beats
from xtask_mt.engine.final_test import checkpoints_for_epoch, test_best_checkpoint
from xtask_mt.engine.job_config import FinishedJobError, read_job_config, restore_job_config
from xtask_mt.engine.loops import EpochSettings, evaluate, train_one_epoch
from xtask_mt.engine.profiling import profiled
from xtask_mt.engine.retention import prune_finished, resolve_keep_policy
from xtask_mt.engine.step import TrainingParts
from xtask_mt.errors import ConfigError, UserError
from xtask_mt.locks import FileLock
from xtask_mt.metrics import MetricCollection
from xtask_mt.metrics.segmentation import segmentation_iou
from xtask_mt.runtime.distributed import (
    DistributedContext,
    any_process,
    convert_batchnorm,
    init_distributed,
    shutdown_distributed,
    wrap_ddp,
)
from xtask_mt.runtime.host_memory import configure_host_memory
from xtask_mt.runtime.precision import (
    StepOptions,
    bf16_warning,
    maybe_compile,
    precision_name,
    resolve_channels_last,
    to_channels_last,
    uses_cuda_graphs,
)
from xtask_mt.runtime.preemption import StopRequest, TrainingInterrupted, signal_name
from xtask_mt.tasks import get_task
from xtask_mt.tracking import Tracker, build_tracker, validation_previews

log = logging.getLogger(__name__)
RUN_LOCK = ".train.lock"  # held by the process training into the folder


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint so a resumed job carries on."""

    epoch: int = 0                 # epochs fully trained
    step_in_epoch: int = 0         # steps of epoch + 1 done when a stop signal came
    best_value: float | None = None
    best_epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_nonfinite: int = 0
    partial_epoch: dict[str, dict[str, float]] = field(default_factory=dict)  # running sums
    stale_validations: int = 0     # validations in a row without improvement (early stopping)
    epochs_run: list[int] = field(default_factory=list)  # epochs trained, over every resume


def resume_checkpoint_path(resume: Any, output_dir: Path) -> Path | None:
    """`auto`: the job's own last checkpoint if there is one; false: none; else that file."""
    if resume is False or str(resume).lower() in ("false", "none", ""):
        return None
    if str(resume) == "auto":
        last = output_dir / "checkpoints" / "last.pt"
        if not last.is_file() and (output_dir / "metrics.json").is_file():
            raise FinishedJobError(
                f"{output_dir} holds a finished job whose last.pt was not kept "
                "(trainer.keep_checkpoints), so it cannot train on; keep_checkpoints=all keeps "
                "it, or start afresh with trainer.resume=false")
        return last if last.is_file() else None
    path = Path(str(resume)).expanduser()
    if not path.is_file():
        raise CheckpointError(f"trainer.resume={resume!r}: no such checkpoint file; use auto, "
                              "false or the path of a last.pt / best.pt")
    return path


@dataclass
class Run:
    """Everything one training job holds while it runs."""

    cfg: DictConfig
    output_dir: Path
    ctx: DistributedContext
    parts: TrainingParts
    scheduler: Any
    train_loader: DataLoader
    val_loader: DataLoader
    val_set: Dataset
    num_classes: int
    tracker: Tracker = field(default_factory=Tracker)
    val_metrics: MetricCollection | None = None  # the last validation's accumulator
    progress: Progress = field(default_factory=Progress)
    keep: str = "all"  # trainer.keep_checkpoints, resolved (see engine.retention)
    initial: dict[str, float] = field(default_factory=dict)
    train_stats: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)  # trainer.test_after_training

    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def progress_bar(self) -> bool:
        return bool(self.cfg.trainer.progress_bar) and self.ctx.is_main


def train(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run the training job described by `cfg`, writing checkpoints and metrics.json into
    `output_dir`. Returns the summary that metrics.json holds.

    With trainer.strategy=ddp (under torchrun) every process trains on its share of each
    batch; rank 0 alone logs, tracks and writes files, and all ranks return the same summary.
    """
    validate_config(cfg)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    t = cfg.trainer
    ctx = init_distributed(str(t.get("strategy", "none")), resolve_device(str(t.device)))
    finished = False
    try:
        summary = _train(cfg, output_dir, ctx)
        finished = True
        return summary
    finally:
        shutdown_distributed(wait_for_all=finished)


class RunDirBusyError(UserError):
    """Another live process is training into the same output folder."""


def _train(cfg: DictConfig, output_dir: Path, ctx: DistributedContext) -> dict[str, Any]:
    lock = FileLock(output_dir / RUN_LOCK)
    if ctx.is_main:
        if not lock.acquire():
            raise RunDirBusyError(
                f"{output_dir} is in use by another training process (pid {lock.holder()}); "
                "wait for it to finish or give this job another hydra.run.dir")
        for folder in (output_dir, output_dir / "checkpoints"):
            for stale in remove_stale_temp_files(folder):
                log.info("removed %s, left by an interrupted write", stale)
    job_config = read_job_config(output_dir) if ctx.is_main else {}
    try:
        with lock:
            return _train_holding_the_folder(cfg, output_dir, ctx)
    finally:
        restore_job_config(job_config)


def _train_holding_the_folder(cfg: DictConfig, output_dir: Path, ctx: DistributedContext
                              ) -> dict[str, Any]:
    if ctx.is_main and OmegaConf.select(cfg, "extras.print_config", default=False):
        _show_config_tree(cfg, output_dir)
    run = setup(cfg, output_dir, ctx)
    run_id = resume(run)
    run.tracker = build_tracker(cfg, output_dir, resume_id=run_id) if ctx.is_main else Tracker()
    if run.progress.history:  # resumed: the summary and the artifact's best epoch carry on
        run.tracker.summarise(run.progress.history, run.progress.best, run.progress.best_epoch)
    exit_code = 1
    try:
        t = cfg.trainer
        if bool(t.val_at_start) and run.progress.epoch == 0 and run.progress.step_in_epoch == 0:
            run.initial = {f"val/{k}": v for k, v in _validation_figures(run).items()}
            run.tracker.log(run.initial, step=0)
            log.info("untrained model  %s", _format(run.initial, cfg.model.tasks))
        early_stopping = EarlyStopping.from_config(t)
        with StopRequest() as stop, profiled(bool(t.get("profile", False)) and ctx.is_main,
                                             output_dir, ctx.device):
            for epoch in range(run.progress.epoch + 1, int(t.epochs) + 1):
                if early_stopping.should_stop(run.progress.stale_validations):
                    log.info("stopping early after epoch %d: %s", run.progress.epoch,
                             early_stopping.reason(str(t.monitor),
                                                   run.progress.stale_validations))
                    break
                train_epoch(run, epoch, stop)
        if bool(t.get("test_after_training", False)):
            test_epoch, run.test = _test_keeping_metrics(run)
            run.tracker.log(run.test, step=run.progress.epoch)
            log.info("test split, weights of epoch %d  %s", test_epoch,
                     _format(run.test, cfg.model.tasks, prefix="test"))
        exit_code = 0
    finally:
        run.tracker.finish(exit_code)
    return finish(run)


def _show_config_tree(cfg: DictConfig, output_dir: Path) -> None:
    """Log the resolved config as a tree and keep it as config_tree.txt (extras.print_config)."""
    tree = config_tree(cfg)
    write_atomic(output_dir / TREE_FILE, lambda f: f.write(tree.encode()))
    log.info("composed config (kept in %s):\n%s", output_dir / TREE_FILE, tree)


def setup(cfg: DictConfig, output_dir: Path, ctx: DistributedContext) -> Run:
    """Seed, then build the data, model, objective, weighting and optimiser of the job."""
    t = cfg.trainer
    seed_everything(int(t.seed))
    device = ctx.device
    options = StepOptions(device, precision_name(t.get("precision", "32")),
                          resolve_channels_last(t.get("channels_last", False), device))
    if ctx.is_main and (warning := bf16_warning(options.precision, device)):
        log.warning(warning)
    if not ctx.is_main:
        logging.getLogger("xtask_mt").setLevel(logging.WARNING)
    configure_host_memory(device, t)

    overfit = int(t.get("overfit_batches", 0)) > 0  # validates on the same train batches
    train_set = build_dataset(cfg, TRAIN, augment=not overfit)
    val_set = train_set if overfit else build_dataset(cfg, VAL)
    pin = device.type == "cuda"
    train_loader = build_loader(cfg, train_set, True, ctx.rank, ctx.world_size, pin,
                                shuffle=not overfit)
    val_loader = build_loader(cfg, val_set, False, ctx.rank, ctx.world_size, pin)
    train_loader, val_loader = cache_on_device(cfg, device, train_loader, val_loader)
    num_classes = train_set.num_classes
    model = build_model(cfg, num_classes).to(device)
    if ctx.enabled and bool(t.get("sync_batchnorm", True)):
        model = convert_batchnorm(model, device)
    model = to_channels_last(model, options.channels_last)
    weighting = build_weighting(cfg, model.tasks).to(device)
    optimizer = build_optimizer(cfg, model, weighting)
    distillation = build_distillation(cfg, model.encoder, model.tasks, num_classes, device)
    if distillation is not None:
        for task, teacher in distillation.teachers.items():
            distillation.teachers[task] = to_channels_last(teacher, options.channels_last)
        optimizer.add_param_group({"params": list(distillation.loss.parameters()),
                                   "lr": float(cfg.kd.adaptor_lr),
                                   "weight_decay": float(cfg.kd.adaptor_weight_decay)})
    compiled, mode = bool(t.get("compile", False)), str(t.get("compile_mode", "default"))
    runner = maybe_compile(wrap_ddp(model, ctx), compiled,
                           str(t.get("compile_backend", "inductor")), mode)
    parts = TrainingParts(runner, model, build_objective(cfg), weighting, optimizer, options,
                          options.grad_scaler(), int(t.get("grad_stats_every", 0)),
                          distillation, cuda_graphs=compiled and uses_cuda_graphs(mode, device))
    log.info("training on %s x %d process(es), precision %s%s: %d train / %d val samples, "
             "%d classes, %.1fM parameters", device, ctx.world_size, options.precision,
             ", channels-last" if options.channels_last else "", len(train_set), len(val_set),
             num_classes, sum(p.numel() for p in model.parameters()) / 1e6)
    return Run(cfg, Path(output_dir), ctx, parts, build_scheduler(cfg, optimizer),
               train_loader, val_loader, val_set, num_classes,
               keep=resolve_keep_policy(str(t.get("keep_checkpoints", "auto"))))


def resume(run: Run) -> str | None:
    """Restore the checkpoint trainer.resume points at, if any; returns its W&B run id."""
    path = resume_checkpoint_path(run.cfg.trainer.get("resume", "auto"), run.output_dir)
    if path is None:
        return None
    payload = load_checkpoint(path)
    if "optimizer" not in payload:
        raise CheckpointError(
            f"{path} holds a finished job's best weights only (trainer.keep_checkpoints="
            f"{payload.get('kept', 'best_weights')}): evaluate it or use it as a teacher; to "
            "train on from it, start a new job (trainer.resume=false)")
    check_model_spec(path, payload.get("model_spec", {}), model_spec(run.cfg, run.num_classes))
    if payload.get("config"):
        check_training_settings(path, payload["config"],
                                OmegaConf.to_container(run.cfg, resolve=True))
    p = run.parts
    if (p.distillation is not None) != bool(payload.get("distillation")):
        raise CheckpointError(
            f"{path} was trained {'without' if p.distillation else 'with'} method=kd4mtl; "
            f"resume it {'without' if p.distillation else 'with'} it, or start afresh")
    p.model.load_state_dict(payload["model"])
    p.optimizer.load_state_dict(payload["optimizer"])
    restore_lr_schedule(run.scheduler, payload["scheduler"])
    p.weighting.load_state_dict(payload["weighting"])
    if p.distillation is not None:
        p.distillation.loss.load_state_dict(payload["distillation"])
    if p.scaler is not None and payload.get("scaler"):
        p.scaler.load_state_dict(payload["scaler"])
    run.progress = Progress(**payload["progress"])
    log.info("resuming from %s: %d epochs done, %d steps into the next", path,
             run.progress.epoch, run.progress.step_in_epoch)
    return payload.get("wandb_run_id")


def save(run: Run, names: tuple[str, ...]) -> None:
    """Write the run's state to checkpoints/<name> for each name (rank 0 only)."""
    if not run.ctx.is_main:
        return
    p = run.parts
    payload = {
        "model": p.model.state_dict(), "optimizer": p.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "weighting": p.weighting.state_dict(),
        "epoch": run.progress.epoch, "progress": asdict(run.progress),
        "config": OmegaConf.to_container(run.cfg, resolve=True),
        "model_spec": model_spec(run.cfg, run.num_classes), "wandb_run_id": run.tracker.run_id,
        "scaler": p.scaler.state_dict() if p.scaler is not None else None,
        "distillation": p.distillation.loss.state_dict() if p.distillation is not None
        else None,
    }
    for name in names:
        save_checkpoint(run.checkpoint_dir / name, payload)


def resolve_sync_every(value: Any, device: torch.device) -> int:
    """trainer.sync_every: a count, or auto: every step on a CPU (whose steps run in order
    with the host, so a look costs nothing), every 50 steps on a GPU (where each look
    stalls the host until the device has caught up)."""
    if str(value) == "auto":
        return 1 if device.type == "cpu" else 50
    return int(value)


def _interrupted(run: Run, signum: int | None, where: str) -> TrainingInterrupted:
    return TrainingInterrupted(
        signum or 15, f"stopped by {signal_name(signum)} {where}; checkpoint written to "
        f"{run.checkpoint_dir / 'last.pt'}. Run the same command again (trainer.resume=auto) "
        "to continue.")


def train_epoch(run: Run, epoch: int, stop: StopRequest) -> None:
    """Train epoch `epoch`, validate when due, checkpoint, log; raise TrainingInterrupted
    (after writing last.pt) when a stop signal came."""
    t, p, progress = run.cfg.trainer, run.parts, run.progress
    epochs, steps = int(t.epochs), train_batches(t, len(run.train_loader))
    start = time.perf_counter()
    # Randomness is a function of (seed, epoch): a resumed epoch replays the same shuffling
    # and augmentation as an uninterrupted run.
    seed_everything(int(t.seed) + epoch)
    run.train_loader.generator.manual_seed(int(t.seed) + epoch)
    run.train_loader.sampler.set_epoch(epoch)
    if hasattr(p.model.encoder, "set_epoch"):  # a trunk that anneals by epoch (LTB)
        p.model.encoder.set_epoch(epoch)
    lr = p.optimizer.param_groups[0]["lr"]
    result = train_one_epoch(p, run.train_loader, EpochSettings(
        description=f"epoch {epoch}/{epochs}", first_step=(epoch - 1) * steps,
        skip_steps=progress.step_in_epoch, skip_nonfinite=bool(t.skip_nonfinite),
        progress_bar=run.progress_bar, stop_requested=lambda: stop.requested,
        resumed=progress.partial_epoch if run.ctx.is_main else None, max_steps=steps,
        sync_every=resolve_sync_every(t.get("sync_every", 1), p.options.device)))
    progress.skipped_nonfinite += result.skipped_nonfinite
    if result.stopped:  # even after the epoch's last step: validation waits for the resume
        progress.step_in_epoch = result.steps_done
        progress.partial_epoch = result.partial or {}
        save(run, ("last.pt",))
        raise _interrupted(run, stop.signum,
                           f"in epoch {epoch} after step {result.steps_done}/{steps}")
    progress.step_in_epoch = 0
    progress.partial_epoch = {}
    run.train_stats = result.stats
    p.weighting.epoch_end({k[len("task_"):]: v for k, v in result.stats.items()
                           if k.startswith("task_")})
    run.scheduler.step()
    logged = {f"train/{k}": v for k, v in result.stats.items()}
    logged.update({f"train/weight_{k}": v for k, v in p.weighting.task_weights().items()})
    logged["train/lr"] = lr
    logged["train/skipped_nonfinite"] = float(progress.skipped_nonfinite)
    validated = epoch % int(t.val_every) == 0 or epoch == epochs
    best_before = progress.best_value
    is_best = validate(run, epoch, logged) if validated else False
    if validated:
        progress.stale_validations = EarlyStopping.from_config(t).stale_count(
            progress.stale_validations, progress.final[str(t.monitor)], best_before)
    logged["epoch_time_s"] = time.perf_counter() - start
    if validated:
        progress.history.append(
            {"epoch": epoch, "epoch_time_s": logged["epoch_time_s"],
             **{k: v for k, v in logged.items() if k.startswith(("train/", "val/"))}})
    progress.epoch = epoch
    progress.epochs_run.append(epoch)
    # last.pt, which says where training stands, is written last: a kill while best.pt is
    # written leaves last.pt at the previous epoch, which the resumed job trains again
    testing = bool(t.get("test_after_training", False))
    save(run, checkpoints_for_epoch(run.keep, is_best, testing))
    track_epoch(run, epoch, logged, validated)
    log.info("epoch %d/%d  %s", epoch, epochs, _format(logged, run.cfg.model.tasks))
    if any_process(stop.requested):
        raise _interrupted(run, stop.signum, f"after epoch {epoch}")


def _validation_figures(run: Run) -> dict[str, float]:
    p = run.parts
    run.val_metrics = build_metrics(run.cfg, run.num_classes, p.options.device)
    return evaluate(p.model, run.val_loader, p.objective, run.val_metrics, p.options,
                    progress_bar=run.progress_bar,
                    max_batches=val_batches(run.cfg.trainer, len(run.val_loader)))


class NoValidPixelsError(UserError):
    """The data leave a metric nothing to measure: no valid pixel of its task in a split."""


def validate(run: Run, epoch: int, logged: dict[str, float]) -> bool:
    """Validate, add the figures to `logged` and record a new best; returns whether this
    epoch is the best so far by trainer.monitor."""
    progress, monitor = run.progress, str(run.cfg.trainer.monitor)
    progress.final = {f"val/{k}": v for k, v in _validation_figures(run).items()}
    logged.update(progress.final)
    unmeasured = sorted(validation_metric_names(run.cfg) - set(progress.final))
    if unmeasured:  # a task with no valid pixel in the split (e.g. all-zero normals)
        log.warning("epoch %d: %s not measured: the validation split has no valid pixel of "
                    "their task; check its ground truth under dataset.root", epoch,
                    ", ".join(unmeasured))
    value = progress.final.get(monitor)
    if value is None and monitor in unmeasured:
        raise NoValidPixelsError(
            f"trainer.monitor={monitor} cannot be measured: the validation split has no valid "
            "pixel of its task (all of its ground truth is marked invalid, e.g. all-zero "
            "normals); check the data under dataset.root")
    if value is None:
        raise ConfigError(f"trainer.monitor={monitor!r} is not among the validation metrics "
                          f"{sorted(progress.final)}")
    is_best = beats(value, progress.best_value, str(run.cfg.trainer.monitor_mode))
    if is_best:
        progress.best_value, progress.best_epoch = value, epoch
        progress.best = dict(progress.final)
    return is_best


def track_epoch(run: Run, epoch: int, logged: dict[str, float], validated: bool) -> None:
    """Send epoch `epoch` to the tracker once its checkpoints are written: a job killed
    before then trains the epoch again, and W&B online drops steps it has seen, so a logged
    epoch is always a saved one. Sample images, the per-class IoU table and the scalars share
    the epoch's step."""
    tracker, progress = run.tracker, run.progress
    if validated:
        _log_samples(run, epoch)
        class_iou = segmentation_iou(run.val_metrics)
        if class_iou is not None:
            tracker.log_class_iou(list(getattr(run.val_set, "class_names", [])), class_iou,
                                  step=epoch)
    tracker.log(logged, step=epoch)
    if validated:
        tracker.summarise(progress.history, progress.best, progress.best_epoch)


def _log_samples(run: Run, epoch: int) -> None:
    """The tracker's validation sample images; a failure to draw them only warns."""
    if not run.tracker.sample_count:
        return
    try:
        previews = validation_previews(run.parts.model, run.val_loader,
                                       run.parts.options.device, run.num_classes,
                                       run.tracker.sample_count)
    except Exception as exc:  # pictures are not worth a training job
        log.warning("no validation sample images for epoch %d (%s: %s)", epoch,
                    type(exc).__name__, exc)
        return
    run.tracker.log_samples({"previews": previews, "class_names": getattr(
        run.val_set, "class_names", None), "unit": getattr(run.val_set, "depth_unit", "")},
        step=epoch)


def _test_keeping_metrics(run: Run) -> tuple[int, dict[str, float]]:
    """test_best_checkpoint; should it fail, the trained job's figures still land in
    metrics.json (with `test_error`) and its checkpoints stay, so that
    trainer.skip_finished=false resumes at the end and only tests again."""
    try:
        return test_best_checkpoint(run.cfg, run.parts, run.num_classes, run.checkpoint_dir,
                                    run.ctx, run.progress_bar)
    except Exception as exc:
        if run.ctx.is_main:
            error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            write_json_atomic(run.output_dir / "metrics.json",
                              {**_summary(run), "test_error": error})
        raise


def _summary(run: Run) -> dict[str, Any]:
    """What metrics.json holds."""
    t, progress = run.cfg.trainer, run.progress
    summary = {"final": progress.final, "best": progress.best, "best_epoch": progress.best_epoch,
               "monitor": str(t.monitor), "monitor_mode": str(t.monitor_mode),
               "epochs": int(t.epochs), "train": run.train_stats, "history": progress.history,
               "epochs_run": progress.epochs_run,
               "skipped_nonfinite": progress.skipped_nonfinite}
    if run.initial:
        summary["initial"] = run.initial
    if EarlyStopping.from_config(t).should_stop(progress.stale_validations) \
            and progress.epoch < int(t.epochs):
        summary["stopped_early"] = progress.epoch
        summary["stale_validations"] = progress.stale_validations  # judged again on a re-run
    if run.test:
        summary["test"] = run.test
    summary["tags"] = list(run.cfg.get("tags") or [])
    return summary


def finish(run: Run) -> dict[str, Any]:
    """The summary metrics.json holds, written by rank 0."""
    t, progress = run.cfg.trainer, run.progress
    summary = _summary(run)
    if run.ctx.is_main:
        write_json_atomic(run.output_dir / "metrics.json", summary)
        for done in prune_finished(run.checkpoint_dir, run.keep):
            log.info("trainer.keep_checkpoints=%s: %s", run.keep, done)
    log.info("best %s = %.4f at epoch %d; outputs in %s", t.monitor,
             progress.best_value if progress.best_value is not None else float("nan"),
             progress.best_epoch, run.output_dir)
    return summary


def _format(values: dict[str, float], tasks: Any, prefix: str = "val") -> str:
    """A log line: the total loss and the headline `prefix` (val, test) metrics of `tasks`."""
    keys = ["train/total"] + [f"{prefix}/{name}" for task in tasks
                              for name in get_task(task).headline_metrics]
    return "  ".join(f"{k}={values[k]:.4f}" for k in keys if k in values)
