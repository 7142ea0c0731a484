"""A whole training run: build from the config, train, validate, checkpoint, summarise,
and resume from the last checkpoint after an interruption."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xtask_mt.engine.checkpoint import (
    CheckpointError,
    check_model_spec,
    load_checkpoint,
    save_checkpoint,
    write_atomic,
)
from xtask_mt.engine.distributed import (
    DistributedContext,
    any_process,
    convert_batchnorm,
    init_distributed,
    shutdown_distributed,
    wrap_ddp,
)
from xtask_mt.engine.host_memory import configure_host_memory
from xtask_mt.engine.loops import evaluate, train_one_epoch
from xtask_mt.engine.precision import (
    StepOptions,
    maybe_compile,
    precision_name,
    to_channels_last,
)
from xtask_mt.engine.preemption import StopRequest, TrainingInterrupted, signal_name
from xtask_mt.engine.samples import validation_previews
from xtask_mt.factory import (
    build_criterion,
    build_dataset,
    build_loader,
    build_model,
    build_optimizer,
    build_scheduler,
    build_weighting,
    resolve_device,
    seed_everything,
)
from xtask_mt.models import CrossTaskModel
from xtask_mt.tracking import Tracker, build_tracker
from xtask_mt.validation import ConfigError, validate_config

log = logging.getLogger(__name__)


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


def model_spec(cfg: DictConfig, num_classes: int) -> dict[str, Any]:
    """What must match for a checkpoint's weights to fit a model built from `cfg`."""
    m = cfg.model
    return {"encoder.depth": int(cfg.encoder.depth), "num_classes": int(num_classes),
            "model.tasks": list(m.tasks), "model.transfer.enabled": bool(m.transfer.enabled),
            "model.transfer.batch_norm": bool(m.transfer.batch_norm),
            "model.transfer.wider": bool(m.transfer.wider),
            "model.decoder_width": int(m.decoder_width)}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=True)
    write_atomic(path, lambda f: f.write(text.encode()))


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


def resume_checkpoint_path(resume: Any, output_dir: Path) -> Path | None:
    """`auto`: the job's own last checkpoint if there is one; false: none; else that file."""
    if resume is False or str(resume).lower() in ("false", "none", ""):
        return None
    if str(resume) == "auto":
        last = output_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(str(resume)).expanduser()
    if not path.is_file():
        raise CheckpointError(f"trainer.resume={resume!r}: no such checkpoint file; use auto, "
                              "false or the path of a last.pt / best.pt")
    return path


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


def _train(cfg: DictConfig, output_dir: Path, ctx: DistributedContext) -> dict[str, Any]:
    t = cfg.trainer
    seed = int(t.seed)
    seed_everything(seed)
    device = ctx.device
    precision = precision_name(t.get("precision", "32"))
    options = StepOptions(device, precision, bool(t.get("channels_last", False)))
    if not ctx.is_main:
        logging.getLogger("xtask_mt").setLevel(logging.WARNING)
    configure_host_memory(device, t)

    train_set, val_set = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    pin = device.type == "cuda"
    train_loader = build_loader(cfg, train_set, True, ctx.rank, ctx.world_size, pin)
    val_loader = build_loader(cfg, val_set, False, ctx.rank, ctx.world_size, pin)
    num_classes = train_set.num_classes
    model: CrossTaskModel = build_model(cfg, num_classes).to(device)
    if ctx.enabled and bool(t.get("sync_batchnorm", True)):
        model = convert_batchnorm(model, device)
    model = to_channels_last(model, options.channels_last)
    criterion = build_criterion(cfg)
    weighting = build_weighting(cfg, model).to(device)
    optimizer = build_optimizer(cfg, model, weighting)
    scheduler = build_scheduler(cfg, optimizer)
    scaler = options.grad_scaler()
    config = OmegaConf.to_container(cfg, resolve=True)
    spec = model_spec(cfg, num_classes)

    progress = Progress()
    run_id = None
    resume_path = resume_checkpoint_path(t.get("resume", "auto"), output_dir)
    if resume_path is not None:
        payload = load_checkpoint(resume_path)
        check_model_spec(resume_path, payload.get("model_spec", {}), spec)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        weighting.load_state_dict(payload["weighting"])
        if scaler is not None and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        progress = Progress(**payload["progress"])
        run_id = payload.get("wandb_run_id")
        log.info("resuming from %s: %d epochs done, %d steps into the next", resume_path,
                 progress.epoch, progress.step_in_epoch)
    runner = maybe_compile(wrap_ddp(model, ctx), bool(t.get("compile", False)),
                           str(t.get("compile_backend", "inductor")))
    tracker = build_tracker(cfg, output_dir, resume_id=run_id) if ctx.is_main else Tracker()
    progress_bar = bool(t.progress_bar) and ctx.is_main
    log.info("training on %s x %d process(es), precision %s%s: %d train / %d val samples, "
             "%d classes, %.1fM parameters", device, ctx.world_size, options.precision,
             ", channels-last" if options.channels_last else "", len(train_set), len(val_set),
             num_classes, sum(p.numel() for p in model.parameters()) / 1e6)

    monitor, mode = str(t.monitor), str(t.monitor_mode)
    epochs = int(t.epochs)
    steps_per_epoch = len(train_loader)
    ckpt_dir = output_dir / "checkpoints"
    epochs_run: list[int] = []
    initial: dict[str, float] = {}
    train_stats: dict[str, float] = {}

    def checkpoint(path_names: tuple[str, ...]) -> None:
        if not ctx.is_main:
            return
        payload = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "weighting": weighting.state_dict(),
            "epoch": progress.epoch, "progress": asdict(progress), "config": config,
            "model_spec": spec, "wandb_run_id": tracker.run_id,
            "scaler": scaler.state_dict() if scaler is not None else None,
        }
        for name in path_names:
            save_checkpoint(ckpt_dir / name, payload)

    exit_code = 1
    try:
        if bool(t.val_at_start) and progress.epoch == 0 and progress.step_in_epoch == 0:
            metrics = evaluate(model, val_loader, criterion, num_classes, device,
                               progress_bar=progress_bar, options=options)
            initial = {f"val/{k}": v for k, v in metrics.items()}
            tracker.log(initial, step=0)
            log.info("untrained model  %s", _format(initial))
        with StopRequest() as stop:
            for epoch in range(progress.epoch + 1, epochs + 1):
                start = time.perf_counter()
                # Randomness is a function of (seed, epoch): a resumed epoch replays the
                # same shuffling and augmentation as an uninterrupted run.
                seed_everything(seed + epoch)
                train_loader.generator.manual_seed(seed + epoch)
                train_loader.sampler.set_epoch(epoch)
                lr = optimizer.param_groups[0]["lr"]
                result = train_one_epoch(
                    runner, train_loader, criterion, weighting, optimizer, device,
                    first_step=(epoch - 1) * steps_per_epoch,
                    description=f"epoch {epoch}/{epochs}", progress_bar=progress_bar,
                    skip_steps=progress.step_in_epoch, skip_nonfinite=bool(t.skip_nonfinite),
                    stop_requested=lambda: stop.requested, options=options, scaler=scaler)
                progress.skipped_nonfinite += result.skipped_nonfinite
                if result.stopped and result.steps_done < steps_per_epoch:
                    progress.step_in_epoch = result.steps_done
                    checkpoint(("last.pt",))
                    raise TrainingInterrupted(
                        stop.signum or 15,
                        f"stopped by {signal_name(stop.signum)} in epoch {epoch} after step "
                        f"{result.steps_done}/{steps_per_epoch}; checkpoint written to "
                        f"{ckpt_dir / 'last.pt'}. Run the same command again (trainer.resume="
                        "auto) to continue.")
                progress.step_in_epoch = 0
                train_stats = result.stats
                scheduler.step()
                logged = {f"train/{k}": v for k, v in train_stats.items()}
                logged.update({f"train/weight_{k}": v
                               for k, v in weighting.task_weights().items()})
                logged["train/lr"] = lr
                logged["train/skipped_nonfinite"] = float(progress.skipped_nonfinite)
                is_best = False
                validated = epoch % int(t.val_every) == 0 or epoch == epochs
                if validated:
                    metrics = evaluate(model, val_loader, criterion, num_classes, device,
                                       progress_bar=progress_bar, options=options)
                    progress.final = {f"val/{k}": v for k, v in metrics.items()}
                    logged.update(progress.final)
                    value = progress.final.get(monitor)
                    if value is None:
                        raise ConfigError(f"trainer.monitor={monitor!r} is not among the "
                                          f"validation metrics {sorted(progress.final)}")
                    if tracker.sample_count:
                        previews = validation_previews(model, val_loader, num_classes, device,
                                                       tracker.sample_count)
                        tracker.log_samples({"previews": previews, "class_names": getattr(
                            val_set, "class_names", None)}, step=epoch)
                    is_best = _is_better(value, progress.best_value, mode)
                    if is_best:
                        progress.best_value, progress.best_epoch = value, epoch
                        progress.best = dict(progress.final)
                logged["epoch_time_s"] = time.perf_counter() - start
                if validated:
                    progress.history.append(
                        {"epoch": epoch, "epoch_time_s": logged["epoch_time_s"],
                         **{k: v for k, v in logged.items() if k.startswith(("train/", "val/"))}})
                progress.epoch = epoch
                epochs_run.append(epoch)
                tracker.log(logged, step=epoch)
                checkpoint(("last.pt", "best.pt") if is_best else ("last.pt",))
                log.info("epoch %d/%d  %s", epoch, epochs, _format(logged))
                if any_process(stop.requested):
                    raise TrainingInterrupted(
                        stop.signum or 15,
                        f"stopped by {signal_name(stop.signum)} after epoch {epoch}; checkpoint "
                        f"written to {ckpt_dir / 'last.pt'}. Run the same command again "
                        "(trainer.resume=auto) to continue.")
        exit_code = 0
    finally:
        tracker.finish(exit_code)

    summary = {"final": progress.final, "best": progress.best, "best_epoch": progress.best_epoch,
               "monitor": monitor, "monitor_mode": mode, "epochs": epochs, "train": train_stats,
               "history": progress.history, "epochs_run": epochs_run,
               "skipped_nonfinite": progress.skipped_nonfinite}
    if initial:
        summary["initial"] = initial
    if ctx.is_main:
        write_json_atomic(output_dir / "metrics.json", summary)
    log.info("best %s = %.4f at epoch %d; outputs in %s", monitor,
             progress.best_value if progress.best_value is not None else float("nan"),
             progress.best_epoch, output_dir)
    return summary


def _format(values: dict[str, float]) -> str:
    keys = ["train/total", "val/miou", "val/pixacc", "val/abs_err", "val/abs_rel"]
    return "  ".join(f"{k}={values[k]:.4f}" for k in keys if k in values)
