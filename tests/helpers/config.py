"""Config composition without a Hydra app, and tiny settings for fast runs."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data" / "real"

TINY = [
    "encoder=resnet18", "dataset.height=32", "dataset.width=64", "dataset.batch_size=4",
    "dataset.train_size=8", "dataset.val_size=4", "trainer.epochs=1",
    "trainer.device=cpu", "trainer.progress_bar=false",
]


def compose_config(overrides: list[str] | None = None, name: str = "config") -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides or []))
