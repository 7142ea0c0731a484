"""Smallest training settings for sweep and W&B tests: one step of 4 images, 2 to validate."""

from __future__ import annotations

from helpers.config import TINY


def tiny_overrides(**changes: object) -> list[str]:
    """TINY with fewer samples and a narrow decoder; `changes` replace or add keys."""
    values = dict(o.split("=", 1) for o in TINY)
    values.update({"dataset.train_size": "4", "dataset.val_size": "2",
                   "model.decoder_width": "16"})
    values.update({k.replace("__", "."): str(v) for k, v in changes.items()})
    return [f"{k}={v}" for k, v in values.items()]
