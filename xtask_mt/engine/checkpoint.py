"""Atomic checkpoint and JSON files; checkpoints are loaded with weights_only=True and
checked against the model they are loaded into."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from xtask_mt.errors import UserError

CHECKPOINT_FORMAT = "xtask-mt-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(UserError):
    """A checkpoint file that cannot be used: truncated, foreign, or from another model."""


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temp file in `path`'s folder, fsync, then rename it over `path`.

    An interrupted write leaves the previous file intact and no temp file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """`data` as indented JSON with sorted keys, written atomically."""
    text = json.dumps(data, indent=2, sort_keys=True)
    write_atomic(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (see write_atomic)."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    write_atomic(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; clear errors for missing/corrupt/foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a PyTorch file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it or pick another one"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an xtask-mt checkpoint (no '{CHECKPOINT_FORMAT}' "
                              "marker); it was written by another program")
    return payload


def check_model_spec(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse a checkpoint whose model description differs, naming the differing keys."""
    saved = dict(saved)
    if "model.transfer.enabled" in saved and "model.transfer.edges" not in saved:
        # written before transfer nets became edges: the seed's two, when transfer was on
        saved["model.transfer.edges"] = [["seg", "depth"], ["depth", "seg"]] \
            if saved["model.transfer.enabled"] else []
    keys = sorted(set(saved) | set(current))
    diffs = [f"{k}: checkpoint={saved.get(k)!r}, config={current.get(k)!r}" for k in keys
             if saved.get(k) != current.get(k)]
    if diffs:
        raise CheckpointError(f"checkpoint {path} was trained with another model; differing "
                              f"settings: {'; '.join(diffs)}")
