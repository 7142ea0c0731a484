"""Atomic checkpoint and JSON files; checkpoints are loaded with weights_only=True and
checked against the model they are loaded into."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from omegaconf import DictConfig, OmegaConf

from xtask_mt.config.build import (
    LEGACY_LOSS_SETTINGS,
    LEGACY_MODEL_SETTINGS,
    USES_ENCODER_GROUP,
    decoder_bias,
    encoder_spec,
    seed_edge_pairs,
    transfer_edges,
)
from xtask_mt.errors import UserError
from xtask_mt.models.schemes import INPUT_SIZED, SHARING_SCHEMES

CHECKPOINT_FORMAT = "xtask-mt-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(UserError):
    """A checkpoint file that cannot be used: truncated, foreign, or from another model."""


class DiskFullError(UserError):
    """No space left (or quota exceeded) while writing a file; the previous one is kept."""


_TMP_SUFFIX = ".tmp"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temp file in `path`'s folder, fsync, then rename it over `path`.

    The file gets the permissions the umask gives a new file (mkstemp's are owner-only).
    An interrupted write leaves the previous file intact; a kill -9 may leave a temp file,
    which remove_stale_temp_files deletes on the job's next start. A full disk becomes one
    DiskFullError naming the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        full = _out_of_space(exc, path.parent)  # before the temp file frees its space
        Path(tmp).unlink(missing_ok=True)
        if full:
            kept = f"the previous {path.name} is kept" if path.exists() else "nothing was kept"
            reason = getattr(exc, "strerror", None) or "no space left on device"
            raise DiskFullError(f"disk full while writing {path} ({reason}); {kept}. "
                                "Free some space and run the same command again") from exc
        raise


_NEARLY_FULL = 64 * 2**20  # bytes free under which a failed write is put down to the disk


def _out_of_space(exc: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of space: ENOSPC or EDQUOT, or an error while the disk
    has next to nothing free (torch's zip writer reports a full disk as a RuntimeError
    without the errno)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(exc, OSError | RuntimeError):
        return False
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files write_atomic left in `folder` when its process was killed.
    Call it only while holding the folder (no other writer)."""
    stale = [p for p in Path(folder).glob(f".*{_TMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """`data` as indented JSON with sorted keys, written atomically."""
    text = json.dumps(data, indent=2, sort_keys=True)
    write_atomic(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (see write_atomic)."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    write_atomic(path, lambda f: torch.save(payload, f))


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    """The one-line error for a checkpoint that cannot be read, with the first line of the
    reader's own complaint."""
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return CheckpointError(f"checkpoint {path} is damaged, truncated or not a PyTorch file "
                           f"({type(exc).__name__}: {detail}); delete it or pick another one")


def _verify_archive(path: Path) -> None:
    """Check every member of the checkpoint's zip archive against its CRC-32: torch.load does
    not, and a flipped bit in a tensor would otherwise load as a silently wrong weight."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # not a zip at all, or its directory is damaged
        raise _unreadable(path, exc) from exc
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: its member {bad} fails the CRC "
                              "check; delete it or pick another one")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; clear errors for missing/corrupt/foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    _verify_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any damage shows as some exception here
        raise _unreadable(path, exc) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an xtask-mt checkpoint (no '{CHECKPOINT_FORMAT}' "
                              "marker); it was written by another program")
    return payload


def model_spec(cfg: DictConfig, num_classes: int) -> dict[str, Any]:
    """What must match for a checkpoint's weights to fit a model built from `cfg`."""
    m = cfg.model
    spec = {"model.arch": str(m.arch), "num_classes": int(num_classes),
            "model.tasks": list(m.tasks), "model.transfer.enabled": bool(m.transfer.enabled),
            "model.transfer.edges": [list(edge) for edge in transfer_edges(cfg)],
            "model.transfer.arch": str(m.transfer.arch),
            "model.transfer.batch_norm": bool(m.transfer.batch_norm),
            "model.transfer.wider": bool(m.transfer.wider)}
    if str(m.arch) in USES_ENCODER_GROUP:
        spec.update({**encoder_spec(cfg.encoder),
                     "model.decoder_width": int(m.decoder_width),
                     "model.decoder_align_corners": bool(m.decoder_align_corners),
                     "model.decoder_bias": decoder_bias(cfg)})
    if str(m.arch) == "deeplabv3plus":
        spec.update({"encoder.depth": int(cfg.encoder.depth),
                     "model.output_stride": int(m.output_stride)})
    if m.get("separate_trunks", False):
        spec["model.separate_trunks"] = True
    if str(m.arch) in SHARING_SCHEMES:
        spec["model.sharing"] = OmegaConf.to_container(m.get("sharing") or {}, resolve=True)
    if str(m.arch) in INPUT_SIZED:  # its gates read the flattened image
        spec["input"] = [int(cfg.dataset.height), int(cfg.dataset.width)]
    if str(m.arch) == "adamtnet":  # its attention weights are sized for these
        spec["input"] = [int(cfg.dataset.batch_size), int(cfg.dataset.height),
                         int(cfg.dataset.width)]
    return spec


def check_model_spec(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse a checkpoint whose model description differs, naming the differing keys."""
    saved = dict(saved)
    if "model.transfer.enabled" in saved and "model.transfer.edges" not in saved:
        # written before transfer nets became edges: the seed's two, when transfer was on
        saved["model.transfer.edges"] = seed_edge_pairs() \
            if saved["model.transfer.enabled"] else []
    if saved:  # settings added since it was written stand for what it was trained with
        legacy = {f"model.{key}": value for key, value in LEGACY_MODEL_SETTINGS.items()}
        saved.update({key: value for key, value in legacy.items() if key not in saved and (
            key in current or "model.arch" not in saved)})
    keys = sorted(set(saved) | set(current))
    diffs = [f"{k}: checkpoint={saved.get(k)!r}, config={current.get(k)!r}" for k in keys
             if saved.get(k) != current.get(k)]
    if diffs:
        raise CheckpointError(f"checkpoint {path} was trained with another model; differing "
                              f"settings: {'; '.join(diffs)}")


# Settings that may differ between a checkpoint and the job resuming it: how long to train
# (and when to stop early), where and how the job runs and is watched, where the data lies.
# Everything else changes what the resumed job computes.
RESUME_SAFE_KEYS = ("trainer.epochs", "trainer.resume", "trainer.progress_bar",
                    "trainer.skip_finished", "trainer.device", "trainer.val_every",
                    "trainer.val_at_start", "trainer.grad_stats_every", "trainer.compile",
                    "trainer.compile_backend", "trainer.compile_mode", "trainer.sync_every",
                    "trainer.channels_last", "trainer.retain_host_memory",
                    "trainer.strategy", "trainer.keep_checkpoints", "trainer.early_stopping",
                    "trainer.test_after_training", "trainer.profile", "logger", "dataset.root",
                    "dataset.num_workers", "dataset.cache", "dataset.cache_dir",
                    "dataset.device_cache", "placement",
                    "dataset.prepared_dir", "paths", "tags", "extras")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def check_training_settings(path: Path, saved: dict[str, Any], current: dict[str, Any]
                            ) -> None:
    """Refuse to resume a checkpoint trained with other settings (resolved configs), naming
    each differing key; keys under RESUME_SAFE_KEYS may differ, and keys the checkpoint does
    not know (options added since) are not compared, but for LEGACY_LOSS_SETTINGS, which
    stand for what it trained with."""
    old, new = _flatten(saved), _flatten(current)
    if "loss" in saved:
        for key, value in LEGACY_LOSS_SETTINGS.items():
            old.setdefault(f"loss.{key}", value)
    diffs = [f"{k}: checkpoint={old[k]!r}, config={new.get(k)!r}" for k in sorted(old)
             if old[k] != new.get(k) and not k.startswith(RESUME_SAFE_KEYS)
             and (k in new or not any(n.startswith(f"{k}.") for n in new))]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was trained with other settings, which a resume would mix "
            f"into one run: {'; '.join(diffs)}. Run with the checkpoint's settings, or start "
            "afresh (trainer.resume=false, or another hydra.run.dir)")
