"""trainer.test_after_training: once training is done, evaluate the best checkpoint on the
dataset's test split, which (unlike val) picked no checkpoint, so its figures are unbiased."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from xtask_mt.config.build import build_dataset, build_loader, build_metrics
from xtask_mt.data.splits import TEST
from xtask_mt.engine.batch_limits import val_batches
from xtask_mt.engine.checkpoint import load_checkpoint
from xtask_mt.engine.loops import evaluate
from xtask_mt.engine.retention import BEST, LAST, checkpoints_to_write
from xtask_mt.engine.step import TrainingParts
from xtask_mt.runtime.distributed import DistributedContext


def checkpoints_for_epoch(keep: str, is_best: bool, testing: bool) -> tuple[str, ...]:
    """The files an epoch writes (engine.retention); a job that tests after training writes
    best.pt even under keep_checkpoints=none, so that the test (also after a resume) sees the
    best epoch's weights; the finished job still removes it."""
    return checkpoints_to_write("all" if testing and keep == "none" else keep, is_best)


def test_best_checkpoint(cfg: DictConfig, parts: TrainingParts, num_classes: int,
                         checkpoint_dir: Path, ctx: DistributedContext,
                         progress_bar: bool) -> tuple[int, dict[str, float]]:
    """Load best.pt's weights (last.pt's when no validation gave a best) into the model and
    evaluate the test split, under the validation's batch limit. Returns (the tested epoch,
    the `test/*` figures)."""
    path = checkpoint_dir / BEST if (checkpoint_dir / BEST).is_file() else checkpoint_dir / LAST
    payload = load_checkpoint(path)
    parts.model.load_state_dict(payload["model"])
    device = parts.options.device
    loader = build_loader(cfg, build_dataset(cfg, TEST), False, ctx.rank, ctx.world_size,
                          pin_memory=device.type == "cuda")
    figures = evaluate(parts.model, loader, parts.objective,
                       build_metrics(cfg, num_classes, device), parts.options,
                       description="test", progress_bar=progress_bar,
                       max_batches=val_batches(cfg.trainer, len(loader)))
    return int(payload["epoch"]), {f"test/{k}": v for k, v in figures.items()}
