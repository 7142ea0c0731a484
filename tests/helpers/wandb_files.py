"""Read back what W&B wrote for an offline run (its `run-<id>.wandb` record log and its
`files/` folder), no network.

The file is a 7-byte header then 32 KiB blocks of chunks, each `crc32 (4) | length (2) |
type (1) | data`; a record is one FULL chunk or FIRST, MIDDLE..., LAST. Records are
`wandb_internal_pb2.Record` protobufs.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

_HEADER, _BLOCK, _CHUNK = 7, 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # paths saved with the run (run.save, media)
    artifacts: list[dict] = field(default_factory=list)  # name, type, aliases, paths, metadata
    exit_code: int | None = None
    dir: Path = Path()  # the offline-run-* folder

    def table(self, row: dict, key: str) -> list[dict]:
        """The rows of the wandb.Table logged under `key` in history `row`, as dicts."""
        data = json.loads((self.dir / "files" / row[f"{key}/path"]).read_text())
        return [dict(zip(data["columns"], values, strict=True)) for values in data["data"]]


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B record log"
    records, pending, pos = [], b"", _HEADER
    while pos + _CHUNK <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _CHUNK])
        if kind == 0:  # zero padding up to the block end
            pos += left
            continue
        chunk = data[pos + _CHUNK:pos + _CHUNK + length]
        pos += _CHUNK + length
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _parse(path: Path) -> OfflineRun:
    run = OfflineRun()
    for raw in _records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.name, run.group, run.job_type = (r.run_id, r.display_name,
                                                             r.run_group, r.job_type)
            run.tags = list(r.tags)
            run.config.update({_key(i): json.loads(i.value_json) for i in r.config.update})
        elif kind == "config":
            run.config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "files":
            run.files += [f.path for f in record.files.files]
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append({"name": a.name, "type": a.type, "aliases": list(a.aliases),
                                  "paths": [c.path for c in a.manifest.contents],
                                  "metadata": json.loads(a.metadata or "{}")})
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def read_offline_run(run_dir: Path, wait_s: float = 60.0) -> OfflineRun:
    """Parse `run_dir/run-*.wandb` (an `offline-run-*` folder). W&B's service may still be
    flushing the file after `finish()` returns, so wait up to `wait_s` for the exit record."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    deadline = time.monotonic() + wait_s
    run = _parse(path)
    while run.exit_code is None and time.monotonic() < deadline:
        time.sleep(0.5)
        run = _parse(path)
    run.dir = Path(run_dir)
    return run


def offline_runs(job_dir: Path) -> list[OfflineRun]:
    """Every offline run W&B wrote under `job_dir/wandb/`, oldest first."""
    return [read_offline_run(d) for d in sorted(Path(job_dir).glob("wandb/offline-run-*"))]
