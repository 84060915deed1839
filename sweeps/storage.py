"""Where a study lives (`--storage`): parsing the URL, opening the storage safely with racing workers.

sqlite (the default, in the study's folder), any SQLAlchemy URL (PostgreSQL for a cluster: the
driver check, start-up lock and lost connections are in `sweeps/database.py`), or a journal file
on a shared file system. A password in the URL is kept in memory to connect with and shown as ***
everywhere else (`experiments.options.masked_storage`); a URL whose password is that *** (a
--print-config file read back) connects with the password in PGPASSWORD, as does one without a
password (libpq reads the variable itself), which is the recommended way: no file, log or
process list then holds the password. File storages are created under a lock beside the file, and every RDB
operation of the start-up is retried on the database errors racing workers produce.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from optuna.exceptions import ExperimentalWarning

from experiments.options import MASKED_PASSWORD, STORAGE_PASSWORD_VARIABLE, SweepOptions, masked_storage
from infrastructure import io
from infrastructure.errors import ConfigError, DataError
from sweeps.database import check_driver, masked, wrap

LOCK_SUFFIX = ".sweep-lock"  # beside the storage file; not ".lock", which Optuna's journal lock uses itself
SweepSettings = SweepOptions  # how a worker runs the study: run.py's sweep option group


@dataclass(frozen=True)
class StorageTarget:
    """Where a study lives: an RDB URL, or a journal file path. `lock` serialises start-up (file storages)."""

    kind: str  # "rdb" or "journal"
    url: str
    lock: Path | None

    def describe(self) -> str:
        return masked(self.url) if self.kind == "rdb" else f"journal:{self.url}"


def study_dir(runs_root: str | Path, study_name: str) -> Path:
    return Path(runs_root).resolve() / "sweeps" / study_name


def parse_storage(url: str | None, folder: Path) -> StorageTarget:
    """`--storage` (None: sqlite in the study folder) -> StorageTarget; relative paths are made absolute."""
    if not url:
        path = folder / "study.db"
        return StorageTarget("rdb", f"sqlite:///{path}", path.with_name(path.name + LOCK_SUFFIX))
    if url.startswith("journal:"):
        rest = url[len("journal:"):]
        rest = rest[2:] if rest.startswith("///") else rest
        if not rest:
            raise ConfigError("--storage journal:PATH needs a file path")
        path = Path(rest).expanduser().resolve()
        return StorageTarget("journal", str(path), path.with_name(path.name + LOCK_SUFFIX))
    if url.startswith("sqlite:"):
        rest = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not rest or rest.startswith(":memory:") or "mode=memory" in url:
            raise ConfigError(f"--storage {url}: workers cannot share an in-memory or unnamed sqlite database; "
                              "use sqlite:///path/to/study.db")
        path = Path(rest.split("?", 1)[0]).expanduser().resolve()
        return StorageTarget("rdb", f"sqlite:///{path}", path.with_name(path.name + LOCK_SUFFIX))
    if url.startswith("redis"):
        raise ConfigError("--storage: Redis journals need the redis package, which this suite does not install; "
                          "use PostgreSQL or a journal file")
    if "://" in url:
        return StorageTarget("rdb", connect_url(url), None)
    path = Path(url).expanduser().resolve()
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        return StorageTarget("rdb", f"sqlite:///{path}", path.with_name(path.name + LOCK_SUFFIX))
    if path.suffix in (".log", ".journal", ".jsonl"):
        return StorageTarget("journal", str(path), path.with_name(path.name + LOCK_SUFFIX))
    raise ConfigError(f"--storage {url!r}: give an SQLAlchemy URL (sqlite:///..., postgresql://...), "
                      "journal:PATH, or a file ending in .db or .log")


def connect_url(url: str) -> str:
    """The URL to connect with: as given, or, when its password is the *** that --print-config writes in its
    place, without a password, so that the PostgreSQL driver reads it from PGPASSWORD (one ConfigError when that
    variable is not set or the database is not PostgreSQL)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # check_driver names the problem when the storage is opened
    if parsed.password != MASKED_PASSWORD:
        return url
    shown = masked_storage(url)
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(f"--storage {shown}: the password is masked ({MASKED_PASSWORD}, as --print-config writes "
                          f"it) and only PostgreSQL can read it from {STORAGE_PASSWORD_VARIABLE}: give the URL with "
                          "its password")
    if not os.environ.get(STORAGE_PASSWORD_VARIABLE):
        raise ConfigError(f"--storage {shown}: the password is masked ({MASKED_PASSWORD}, as --print-config writes "
                          f"it); set {STORAGE_PASSWORD_VARIABLE} to the database password and run again")
    return parsed._replace(password=None).render_as_string(hide_password=False)  # NamedTuple: set() keeps a None


def file_lock(path: Path | None):
    """The suite's file lock on `path` (no-op for None: a server storage needs none)."""
    if path is None:
        return contextlib.nullcontext()
    path.parent.mkdir(parents=True, exist_ok=True)
    return io.file_lock(path)


def retrying(action, what: str, attempts: int = 8):
    """Run `action()`, retrying the database errors racing workers cause (tables or rows created twice)."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return action()
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError,
                sqlalchemy.exc.ProgrammingError) as error:
            if attempt == attempts - 1:
                raise DataError(f"{what} failed {attempts} times; last error: {error}") from None
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.5)


def open_storage(target: StorageTarget, settings: SweepSettings):
    """The Optuna storage for `target`, with heartbeats and stale-trial retries for RDB storages."""
    if target.kind == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        Path(target.url).parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return JournalStorage(JournalFileBackend(target.url))
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine_kwargs = {}
    if target.url.startswith("sqlite:///"):
        Path(target.url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        check_driver(target.url)  # the postgres extra missing: one line naming it
        engine_kwargs = {"pool_pre_ping": True}

    def connect():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(target.url, engine_kwargs=engine_kwargs, heartbeat_interval=settings.heartbeat_interval,
                              grace_period=settings.grace_period,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                  settings.max_retry, inherit_intermediate_values=True))

    with file_lock(target.lock):
        try:
            return wrap(retrying(connect, f"opening {target.describe()}"), target.url, settings.grace_period)
        except ImportError as error:
            raise ConfigError(f"--storage {target.describe()}: its database driver is not installed "
                              f"({error})") from None


