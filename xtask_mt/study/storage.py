"""Opening the study of a search in its storage, with one line for every way that fails: a
server that does not answer, a file that is not a database, a database driver that is not
installed, a schema written by an older Optuna, a study of other directions. Optuna would
show each as a page of SQLAlchemy traceback, or wait on a server that never answers."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.samplers import BaseSampler
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from xtask_mt.errors import UserError

CONNECT_TIMEOUT_S = 10  # a database server that does not answer within this is an error


class StorageError(UserError):
    """The study's storage cannot be opened or does not hold a study this search can use."""


def shown_url(url: str) -> str:
    """The storage URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _storage(url: str) -> optuna.storages.RDBStorage:
    engine_kwargs = {}
    if not url.startswith("sqlite"):
        # psycopg2 and the MySQL drivers take connect_timeout; without it a host that drops
        # packets holds the search for minutes
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_study(url: str | None, name: str | None, directions: Sequence[str],
               sampler: BaseSampler) -> optuna.Study:
    """The study `name` in the storage at `url` (None: in memory), created if it is not
    there; a StorageError (one line) when it cannot be opened or has other directions."""
    where = f"hydra.sweeper.storage={shown_url(url)}" if url else "the in-memory storage"
    try:
        storage = _storage(url) if url else None
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    directions=list(directions), load_if_exists=True)
    except ImportError as exc:
        cause = exc.__cause__ or exc
        raise StorageError(f"{where}: its database driver is not installed ({cause}); for "
                           "PostgreSQL: pip install 'psycopg[binary]' (postgresql://...) or "
                           "psycopg2-binary (postgresql+psycopg2://...)") from None
    except ArgumentError as exc:
        raise StorageError(f"{where} is not a database URL Optuna can open "
                           f"({_first_line(exc)}); e.g. sqlite:///path/optuna.db or "
                           "postgresql://user:password@host/db") from None
    except SQLAlchemyError as exc:
        raise StorageError(f"{where}: cannot open the study's database "
                           f"({_first_line(exc)}); check that the server is running and "
                           "reachable, or that the file is an Optuna database") from None
    except RuntimeError as exc:
        if "storage upgrade" not in str(exc):
            raise
        raise StorageError(f"{where} was written by an older Optuna; upgrade it once with "
                           f"`optuna storage upgrade --storage '{url}'` and run again") from None
    if [d.name.lower() for d in study.directions] != [d.lower() for d in directions]:
        held = [d.name.lower() for d in study.directions]
        raise StorageError(f"study {study.study_name!r} in {where} optimises {held}, not "
                           f"{list(directions)}: a study's directions are fixed; use another "
                           "hydra.sweeper.study_name")
    return study
