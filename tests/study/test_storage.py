"""A storage that cannot be opened is one line naming it, never a traceback or a wait."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import optuna
import pytest

from xtask_mt.study.storage import StorageError, open_study, shown_url


def _sampler() -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=0)


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "optuna.db"
    db.write_bytes(bytes(range(256)) * 64)
    before = db.read_bytes()
    with pytest.raises(StorageError) as refused:
        open_study(f"sqlite:///{db}", "s", ["maximize"], _sampler())
    text = str(refused.value)
    assert f"hydra.sweeper.storage=sqlite:///{db}" in text and "\n" not in text
    assert "not a database" in text
    assert db.read_bytes() == before  # the file is left as it was


def test_a_server_that_does_not_answer_is_one_line_without_the_password() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://user:secret@127.0.0.1:{port}/optuna"
    start = time.monotonic()
    with pytest.raises(StorageError) as refused:
        open_study(url, "s", ["maximize"], _sampler())
    assert time.monotonic() - start < 30
    text = str(refused.value)
    assert "secret" not in text and f"user:***@127.0.0.1:{port}" in text
    assert "cannot open the study's database" in text


def test_a_url_that_is_not_a_database_url_is_one_line() -> None:
    with pytest.raises(StorageError, match="not a database URL"):
        open_study("optuna.db", "s", ["maximize"], _sampler())


def test_a_study_of_other_directions_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    open_study(url, "s", ["maximize"], _sampler())
    with pytest.raises(StorageError, match=r"optimises \['maximize'\], not \['minimize'\]"):
        open_study(url, "s", ["minimize"], _sampler())
    assert shown_url(url) == url
