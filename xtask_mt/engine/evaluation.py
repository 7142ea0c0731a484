"""Evaluate a finished run's checkpoint on its validation split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xtask_mt.engine.checkpoint import check_model_spec, load_checkpoint
from xtask_mt.engine.loops import evaluate
from xtask_mt.engine.training import model_spec, write_json_atomic
from xtask_mt.factory import (
    build_criterion,
    build_dataset,
    build_loader,
    build_model,
    resolve_device,
)

log = logging.getLogger(__name__)


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> DictConfig:
    """The config saved by Hydra in `run_dir/.hydra/config.yaml`, with dotlist overrides."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: `run` must be the output dir of a "
                                "train.py job (it holds .hydra/ and checkpoints/)")
    cfg = OmegaConf.load(path)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg


def evaluate_run(run_dir: Path, checkpoint: str = "best", overrides: list[str] | None = None,
                 device: str = "auto", progress_bar: bool = True) -> dict[str, Any]:
    """Rebuild the run's model, load `checkpoints/<checkpoint>.pt`, evaluate the val split and
    write `eval/metrics.json`. Returns the metrics."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir, overrides)
    dev = resolve_device(device)
    dataset = build_dataset(cfg, "val")
    loader = build_loader(cfg, dataset, train=False)
    model = build_model(cfg, dataset.num_classes)
    ckpt_path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    payload = load_checkpoint(ckpt_path)
    check_model_spec(ckpt_path, payload.get("model_spec", {}),
                     model_spec(cfg, dataset.num_classes))
    model.load_state_dict(payload["model"])
    model.to(dev)
    metrics = evaluate(model, loader, build_criterion(cfg), dataset.num_classes, dev,
                       progress_bar=progress_bar)
    result = {"checkpoint": str(ckpt_path), "epoch": payload.get("epoch"), "split": "val",
              "metrics": {f"val/{k}": v for k, v in metrics.items()}}
    out_dir = run_dir / "eval"
    out_dir.mkdir(exist_ok=True)
    write_json_atomic(out_dir / "metrics.json", result)
    return result


def format_table(metrics: dict[str, float]) -> str:
    """Two-column text table of metric name and value."""
    width = max(len(k) for k in metrics)
    return "\n".join(f"{k:<{width}}  {v:10.4f}" for k, v in metrics.items())
