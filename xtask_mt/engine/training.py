"""A whole training run: build from the config, train, validate, checkpoint, summarise."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xtask_mt.engine.checkpoint import save_checkpoint
from xtask_mt.engine.distributed import (
    DistributedContext,
    convert_batchnorm,
    init_distributed,
    shutdown_distributed,
    wrap_ddp,
)
from xtask_mt.engine.loops import evaluate, train_one_epoch
from xtask_mt.engine.precision import (
    StepOptions,
    maybe_compile,
    precision_name,
    to_channels_last,
)
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

log = logging.getLogger(__name__)


def model_spec(cfg: DictConfig, num_classes: int) -> dict[str, Any]:
    """What must match for a checkpoint's weights to fit a model built from `cfg`."""
    m = cfg.model
    return {"encoder.depth": int(cfg.encoder.depth), "num_classes": int(num_classes),
            "model.tasks": list(m.tasks), "model.transfer.enabled": bool(m.transfer.enabled),
            "model.transfer.batch_norm": bool(m.transfer.batch_norm),
            "model.transfer.wider": bool(m.transfer.wider),
            "model.decoder_width": int(m.decoder_width)}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


def train(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run the training job described by `cfg`, writing checkpoints and metrics.json into
    `output_dir`. Returns the summary that metrics.json holds.

    With trainer.strategy=ddp (under torchrun) every process trains on its share of each
    batch; rank 0 alone logs, tracks and writes files, and all ranks return the same summary.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    t = cfg.trainer
    ctx = init_distributed(str(t.get("strategy", "none")), resolve_device(str(t.device)))
    try:
        return _train(cfg, output_dir, ctx)
    finally:
        shutdown_distributed()


def _train(cfg: DictConfig, output_dir: Path, ctx: DistributedContext) -> dict[str, Any]:
    t = cfg.trainer
    seed_everything(int(t.seed))
    device = ctx.device
    precision = precision_name(t.get("precision", "32"))
    if precision == "16-mixed" and cfg.weighting.name == "gradnorm":
        raise ValueError("trainer.precision=16-mixed cannot be combined with weighting=gradnorm "
                         "(its weight gradient bypasses the loss scaler); use bf16-mixed or 32")
    options = StepOptions(device, precision, bool(t.get("channels_last", False)))
    if not ctx.is_main:
        logging.getLogger("xtask_mt").setLevel(logging.WARNING)

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
    runner = maybe_compile(wrap_ddp(model, ctx), bool(t.get("compile", False)),
                           str(t.get("compile_backend", "inductor")))
    scaler = options.grad_scaler()
    config = OmegaConf.to_container(cfg, resolve=True)
    spec = model_spec(cfg, num_classes)
    tracker = build_tracker(cfg, output_dir) if ctx.is_main else Tracker()
    progress_bar = bool(t.progress_bar) and ctx.is_main
    log.info("training on %s x %d process(es), precision %s%s: %d train / %d val samples, "
             "%d classes, %.1fM parameters", device, ctx.world_size, options.precision,
             ", channels-last" if options.channels_last else "", len(train_set), len(val_set),
             num_classes, sum(p.numel() for p in model.parameters()) / 1e6)

    monitor, mode = str(t.monitor), str(t.monitor_mode)
    best_value: float | None = None
    best: dict[str, float] = {}
    best_epoch = 0
    final: dict[str, float] = {}
    train_stats: dict[str, float] = {}
    history: list[dict[str, float]] = []
    ckpt_dir = output_dir / "checkpoints"
    epochs = int(t.epochs)
    steps_per_epoch = len(train_loader)
    exit_code = 1
    try:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            train_loader.sampler.set_epoch(epoch)
            train_stats = train_one_epoch(
                runner, train_loader, criterion, weighting, optimizer, device,
                first_step=(epoch - 1) * steps_per_epoch,
                description=f"epoch {epoch}/{epochs}", progress_bar=progress_bar,
                options=options, scaler=scaler)
            scheduler.step()
            logged = {f"train/{k}": v for k, v in train_stats.items()}
            logged.update({f"train/weight_{k}": v for k, v in weighting.task_weights().items()})
            logged["train/lr"] = lr
            is_best = False
            if epoch % int(t.val_every) == 0 or epoch == epochs:
                metrics = evaluate(model, val_loader, criterion, num_classes, device,
                                   progress_bar=progress_bar, options=options)
                final = {f"val/{k}": v for k, v in metrics.items()}
                logged.update(final)
                value = final.get(monitor)
                if value is None:
                    raise KeyError(f"trainer.monitor={monitor!r} is not among the validation "
                                   f"metrics {sorted(final)}")
                is_best = _is_better(value, best_value, mode)
                if is_best:
                    best_value, best, best_epoch = value, dict(final), epoch
            logged["epoch_time_s"] = time.perf_counter() - start
            tracker.log(logged, step=epoch)
            history.append(logged)
            if not ctx.is_main:
                continue
            payload = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "weighting": weighting.state_dict(),
                "epoch": epoch, "config": config, "model_spec": spec,
                "best": {"value": best_value, "epoch": best_epoch, "metrics": best},
                "wandb_run_id": tracker.run_id,
            }
            save_checkpoint(ckpt_dir / "last.pt", payload)
            if is_best:
                save_checkpoint(ckpt_dir / "best.pt", payload)
            log.info("epoch %d/%d  %s", epoch, epochs, _format(logged))
        exit_code = 0
    finally:
        tracker.finish(exit_code)

    summary = {"final": final, "best": best, "best_epoch": best_epoch, "monitor": monitor,
               "monitor_mode": mode, "epochs": epochs, "train": train_stats,
               "history": history}
    if ctx.is_main:
        write_json_atomic(output_dir / "metrics.json", summary)
    log.info("best %s = %.4f at epoch %d; outputs in %s", monitor, best_value or float("nan"),
             best_epoch, output_dir)
    return summary


def _format(values: dict[str, float]) -> str:
    keys = ["train/total", "val/miou", "val/pixacc", "val/abs_err", "val/abs_rel"]
    return "  ".join(f"{k}={values[k]:.4f}" for k in keys if k in values)
