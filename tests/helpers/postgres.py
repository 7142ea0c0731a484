"""A throwaway PostgreSQL server from the OS packages (initdb / pg_ctl), for the tests of
Optuna studies shared between processes. .ci/run installs the packages where they lack."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _binary(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server on a free local port with trust authentication; yields the URL of an
    empty database `optuna`. Skips when PostgreSQL is not installed."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
    # the server refuses to run as root: as root, run it as the packages' postgres user
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="xtask-pg-"))
    root.chmod(0o755)
    data, port = root / "data", _free_port()
    if as_user:
        shutil.chown(root, "postgres")

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True,
                       timeout=120)

    try:
        run(initdb, "-D", str(data), "-A", "trust", "-U", "postgres")
        run(pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
            f"-p {port} -k {root} -h 127.0.0.1", "start")
        try:
            createdb = str(Path(initdb).resolve().with_name("createdb"))
            run(createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna")
            yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
        finally:
            run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
