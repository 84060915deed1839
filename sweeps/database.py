"""Study databases on a server (PostgreSQL): the driver check, a start-up lock, and riding out a lost connection.

Driver
    `--storage postgresql://...` needs a DB-API driver that the suite does not install by
    default: the `postgres` extra (`pip install -e ".[postgres]"`, psycopg 3, which SQLAlchemy 2
    picks for a plain `postgresql://` URL; `postgresql+psycopg2://` selects psycopg2 instead).
    Without it, one ConfigError names the extra, before anything touches the database.

Start-up lock
    Creating a study and enqueueing its first trials must happen once even when workers start
    at the same instant on different machines. File storages serialise that with an fcntl lock
    beside the file; a PostgreSQL study takes a session advisory lock on the server instead
    (`pg_advisory_lock`), which every machine sees and which the server drops by itself if the
    holder dies.

Lost connections
    A database server restarted for maintenance, or a network hiccup, must not crash every
    worker with a traceback, nor make a worker record a trial twice. `ReconnectingStorage` wraps
    the RDB storage: every storage call that fails because the connection is lost (a refused
    connection, a session terminated by the server, SQLSTATE classes 08 and 57P) is retried with
    a growing pause for up to `window` seconds (the sweep's `--grace-period`: after that long
    without heartbeats other workers treat this worker's trial as stale anyway). One line says
    the connection is lost and one that it is back, per outage and process (the heartbeat
    thread and the main thread share them). When the window passes, `DatabaseUnreachable` (a
    DataError: run.py prints it as one line and exits with 2) stops the worker; its running
    trial is left with its lease and its checkpoints, so the next worker retries it from the
    last checkpoint, and a finished but untold trial is reused from its `sweep_trial.json`.

    Every Optuna storage call is one transaction, so retrying a call after a failed commit
    repeats nothing. The one ambiguous case is a commit that reached the server while the
    connection broke before the answer came back: a retried `set_trial_state_values` then finds
    the trial finished; it counts as done when the stored state and values are the ones this
    call wrote (`_already_written`), so a result is neither lost nor recorded twice. A retried
    `create_new_trial` can leave one extra RUNNING trial without a lease, which the stale-trial
    recovery fails and requeues after the grace period.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import threading
import time

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat

from experiments.options import masked_storage
from infrastructure.errors import ConfigError, DataError

POSTGRES_EXTRA = 'pip install -e ".[postgres]"'
LOCK_NAME = "mtat-tagging sweep start-up"


class DatabaseUnreachable(DataError):
    """The study database stayed unreachable for the whole reconnect window."""


def is_server_url(url: str) -> bool:
    """True for an RDB URL of a database server (not a sqlite file)."""
    return "://" in url and not url.startswith("sqlite")


def masked(url: str) -> str:
    """`url` with its password replaced by ***, for messages and logs (`experiments.options.masked_storage`)."""
    return masked_storage(url)


def check_driver(url: str) -> None:
    """Raise ConfigError when the DB-API module the URL's SQLAlchemy dialect imports is missing."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError) as error:
        raise ConfigError(f"--storage {masked(url)}: not a database URL SQLAlchemy knows ({error})") from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        if dialect.name == "postgresql":
            raise ConfigError(f"--storage {masked(url)}: the PostgreSQL driver is not installed ({error}); "
                              f"install the postgres extra: {POSTGRES_EXTRA}") from None
        raise ConfigError(f"--storage {masked(url)}: its database driver is not installed ({error})") from None


def lost_connection(error: BaseException) -> str | None:
    """The first line of the driver's message when `error` (or what caused it) is a lost connection, else None.

    Optuna wraps SQLAlchemy's errors in StorageInternalError ("invalid data in the commit"),
    whatever the cause: the cause chain tells a lost connection from a real error.
    """
    import sqlalchemy.exc

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, sqlalchemy.exc.DBAPIError):
            original = error.orig
            state = str(getattr(original, "sqlstate", None) or getattr(original, "pgcode", None) or "")
            lost = error.connection_invalidated or (
                isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError))
                and (not state or state.startswith("08") or state.startswith("57P")))
            if lost:
                text = str(original if original is not None else error).strip().splitlines()
                return text[0] if text else type(error).__name__
            return None
        error = error.__cause__ or error.__context__
    return None


class _Outage:
    """Whether this process currently misses the database; prints the lost and back lines once per outage."""

    def __init__(self, where: str, window: float, log) -> None:
        self.where, self.window, self.log = where, window, log
        self.since: float | None = None
        self._lock = threading.Lock()

    def down(self, reason: str) -> float:
        with self._lock:
            if self.since is None:
                self.since = time.monotonic()
                self.log(f"sweep: lost the connection to the study database {self.where} ({reason}); "
                         f"retrying for up to {self.window:g} s")
            return self.since

    def up(self) -> None:
        with self._lock:
            if self.since is not None:
                self.log(f"sweep: reconnected to the study database after {time.monotonic() - self.since:.1f} s")
                self.since = None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ReconnectingStorage(BaseStorage, BaseHeartbeat):
    """An RDB storage whose calls survive a lost connection for `window` seconds (see the module doc)."""

    def __init__(self, inner, url: str, window: float, log=_stderr, pause: float = 0.5, max_pause: float = 5.0):
        self._inner = inner
        self._outage = _Outage(masked(url), window, log)
        self._window, self._pause, self._max_pause = window, pause, max_pause

    def _call(self, name: str, *args, **kwargs):
        method = getattr(self._inner, name)
        pause, retried = self._pause, False
        while True:
            try:
                result = method(*args, **kwargs)
            except UpdateFinishedTrialError:
                if retried and name == "set_trial_state_values" and self._already_written(*args, **kwargs):
                    result = True
                else:
                    raise
            except Exception as error:
                reason = lost_connection(error)
                if reason is None:
                    raise
                since = self._outage.down(reason)
                waited = time.monotonic() - since
                if waited >= self._window:
                    raise DatabaseUnreachable(
                        f"the study database {self._outage.where} has been unreachable for {waited:.0f} s "
                        f"({reason}); this worker stops: run it again once the database is back (its running trial "
                        "is retried from its last checkpoint)") from None
                time.sleep(min(pause, self._window - waited))
                pause, retried = min(pause * 2, self._max_pause), True
                continue
            self._outage.up()
            return result

    def _already_written(self, trial_id, state, values=None) -> bool:
        """After a retried commit: does the trial already hold exactly this state and these values?"""
        trial = self._inner.get_trial(trial_id)
        return trial.state == state and (values is None or list(trial.values or []) == list(values))

    def __getattr__(self, name):  # anything else (engine, url, upgrade, ...): the inner storage's, unretried
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)


def _retried_method(name: str):
    def method(self, *args, **kwargs):
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"`{name}` of the wrapped storage, retried while the connection is lost."
    return method


for _name in sorted({n for base in (BaseStorage, BaseHeartbeat) for n in dir(base)
                     if not n.startswith("__") and callable(getattr(base, n))}
                    | {"get_failed_trial_callback", "_get_stale_trial_ids"}):
    setattr(ReconnectingStorage, _name, _retried_method(_name))
ReconnectingStorage.__abstractmethods__ = frozenset()


@contextlib.contextmanager
def server_lock(url: str | None):
    """Hold the database's sweep start-up advisory lock (PostgreSQL URLs; a no-op for anything else)."""
    from sqlalchemy import create_engine, exc, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    if not url or not is_server_url(url) or make_url(url).get_backend_name() != "postgresql":
        yield
        return
    key = int.from_bytes(hashlib.sha256(LOCK_NAME.encode()).digest()[:8], "big", signed=True)
    engine = create_engine(url, poolclass=NullPool)
    try:
        try:
            connection = engine.connect()
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            connection.commit()  # the lock belongs to the session, not to a transaction
        except exc.DBAPIError as error:
            reason = (str(error.orig) or str(error)).strip().splitlines()[0]
            raise DataError(f"cannot reach the study database {masked(url)}: {reason}") from None
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # a lost connection has released it already
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
            connection.close()
    finally:
        engine.dispose()


def wrap(storage, url: str, window: float):
    """`storage` made to ride out lost connections when it lives on a database server (unchanged for sqlite)."""
    return ReconnectingStorage(storage, url, window) if is_server_url(url) else storage


__all__ = ["DatabaseUnreachable", "ReconnectingStorage", "check_driver", "lost_connection", "masked",
           "server_lock", "wrap"]
