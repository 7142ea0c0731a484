"""One-time preparation cache: every frame of a split decoded, resized and label-mapped once,
stored as .npy arrays and read back by memory-mapping.

A cache folder is named by a digest of everything it depends on (source files with their
sizes and modification times, resolution, class count, format version), so changing any of
them selects a new folder and the split is prepared again. It is built in a hidden
``.partial-*`` folder and renamed into place only when complete, so an interrupted
preparation never leaves a folder that looks valid. The builder holds a lock in its partial
folder; a partial folder whose lock nobody holds was left by a killed preparation and is
removed by the next one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from xtask_mt.locks import FileLock, is_abandoned

log = logging.getLogger(__name__)

CACHE_VERSION = 1
_META = "meta.json"
_CHUNK = 32
_LOCK = ".lock"
_GRACE_S = 30.0  # a partial folder younger than this may not hold its lock yet


class Preparable(Protocol):
    """A split that can decode its frames and describe what they depend on."""

    def __len__(self) -> int: ...
    def decode(self, index: int) -> dict[str, np.ndarray]: ...
    def cache_name(self) -> str: ...
    def cache_key(self) -> dict[str, Any]: ...


def cache_path(source: Preparable, cache_root: Path) -> Path:
    """Folder that holds (or will hold) the prepared arrays of `source`."""
    key = {"version": CACHE_VERSION, **source.cache_key()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_root) / f"{source.cache_name()}-{digest}"


def prepare(source: Preparable, cache_root: Path, progress: bool = True,
            threads: int | None = None) -> Path:
    """Prepare `source` under `cache_root` unless a complete, matching cache exists there."""
    final = cache_path(source, cache_root)
    key = {"version": CACHE_VERSION, **source.cache_key()}
    if _is_complete(final, key, len(source)):
        return final
    if final.exists():
        log.warning("cache %s is incomplete or stale; preparing it again", final)
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_partials(final.parent)
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{final.name}-", dir=final.parent))
    lock = FileLock(partial / _LOCK)
    lock.acquire()
    try:
        fields = _fill(source, partial, progress, threads or min(8, os.cpu_count() or 1),
                       final.name)
        meta = {"key": key, "length": len(source), "fields": fields}
        (partial / _META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        try:
            os.rename(partial, final)
        except OSError:  # another process finished the same cache first
            if not _is_complete(final, key, len(source)):
                raise
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        lock.release()
    (final / _LOCK).unlink(missing_ok=True)
    log.info("prepared %d frames into %s", len(source), final)
    return final


def remove_abandoned_partials(cache_root: Path) -> list[Path]:
    """Delete the `.partial-*` folders under `cache_root` that no live preparation holds
    (left by a killed one); returns what was removed."""
    removed = []
    now = time.time()
    for folder in sorted(Path(cache_root).glob(".partial-*")):
        try:
            young = now - folder.stat().st_mtime < _GRACE_S and not (folder / _LOCK).exists()
        except FileNotFoundError:
            continue
        if folder.is_dir() and not young and is_abandoned(folder / _LOCK):
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed %s, left by an interrupted preparation", folder)
            removed.append(folder)
    return removed


def _fill(source: Preparable, folder: Path, progress: bool, threads: int,
          name: str) -> dict[str, dict[str, Any]]:
    """Decode every frame into one memory-mapped .npy file per field."""
    first = source.decode(0)
    n = len(source)
    arrays = {k: np.lib.format.open_memmap(folder / f"{k}.npy", mode="w+", dtype=v.dtype,
                                           shape=(n, *v.shape)) for k, v in first.items()}
    bar = tqdm(total=n, desc=f"preparing {name}", unit="frame", disable=not progress)

    def store(index: int, frame: dict[str, np.ndarray]) -> None:
        for k, array in arrays.items():
            array[index] = frame[k]
        bar.update()

    store(0, first)
    decode: Callable[[int], dict[str, np.ndarray]] = source.decode
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(1, n, _CHUNK):
            indices = range(start, min(start + _CHUNK, n))
            for index, frame in zip(indices, pool.map(decode, indices), strict=True):
                store(index, frame)
    bar.close()
    fields = {}
    for k, array in arrays.items():
        array.flush()
        fields[k] = {"dtype": str(array.dtype), "shape": list(array.shape)}
    return fields


def _is_complete(folder: Path, key: dict[str, Any], length: int) -> bool:
    try:
        meta = json.loads((folder / _META).read_text())
    except (OSError, ValueError):
        return False
    if meta.get("key") != key or meta.get("length") != length:
        return False
    for name, field in meta.get("fields", {}).items():
        try:
            array = np.load(folder / f"{name}.npy", mmap_mode="r")
        except (OSError, ValueError):
            return False
        if list(array.shape) != field["shape"] or str(array.dtype) != field["dtype"]:
            return False
    return bool(meta.get("fields"))


class PreparedSplit:
    """Read-only, memory-mapped frames of a prepared split; opened lazily in each process."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / _META).read_text())
        self.length = int(meta["length"])
        self.fields = tuple(meta["fields"])
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.length

    def arrays(self) -> dict[str, np.ndarray]:
        """Every field as one read-only memory-mapped (N, H, W[, k]) array."""
        if self._arrays is None:
            self._arrays = {k: np.load(self.folder / f"{k}.npy", mmap_mode="r")
                            for k in self.fields}
        return self._arrays

    def read(self, index: int) -> dict[str, np.ndarray]:
        return {k: np.array(a[index]) for k, a in self.arrays().items()}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}
