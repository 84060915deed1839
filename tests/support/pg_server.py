"""A throwaway PostgreSQL server for the tests: a cluster in a temporary folder, removed at the end.

Debian's `postgresql` package puts `initdb`, `pg_ctl` and `postgres` in its lib folder
(`pg_config --bindir` names it), not on PATH. PostgreSQL refuses to run as root, so when the
tests run as root (CI does) the cluster belongs to the `postgres` system user and every server
command runs through `runuser -u postgres --`. The cluster listens on 127.0.0.1 at a free port
(and on a Unix socket in its own folder), trusts every local connection, and skips fsync: it is
a test fixture, its data are worth nothing once the tests end.

`unavailable()` says why no server can be had here (None when one can); the tests skip with
that reason, or fail under `CI=true`, where a green run must mean they ran.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SERVER_USER = "postgres"


def bin_dir() -> Path | None:
    """The folder of `initdb` and `pg_ctl` ($MTAT_TAGGING_PG_BINDIR, `pg_config --bindir`, Debian's layout, PATH)."""
    candidates = []
    if os.environ.get("MTAT_TAGGING_PG_BINDIR"):
        candidates.append(Path(os.environ["MTAT_TAGGING_PG_BINDIR"]))
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=30).stdout
            candidates.append(Path(out.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # newest version first
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _server_user() -> str | None:
    """The user the server runs as: `postgres` when we are root (PostgreSQL refuses root), else None (ourselves)."""
    return SERVER_USER if os.geteuid() == 0 else None


def unavailable() -> str | None:
    """Why no throwaway server can be started here, or None."""
    if bin_dir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl; Debian package postgresql)"
    if _server_user():
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as"
        if not shutil.which("runuser"):
            return "running as root without runuser (util-linux) to start PostgreSQL as another user"
    try:
        import psycopg  # noqa: F401  (the driver of the `postgres` extra)
    except ImportError:
        return 'no PostgreSQL driver: pip install -e ".[postgres]"'
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """One throwaway cluster: `start()`, `url(database)`, `create_database()`, `stop()`, `restart()`, `remove()`."""

    def __init__(self) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        self.bin = bin_dir()
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="mtat-pg-"))  # in /tmp: the postgres user cannot enter pytest's
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._databases = 0
        atexit.register(self.remove)  # a test run that dies still takes its server down

    def _as_server_user(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        result = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            log = self.log.read_text()[-3000:] if self.log.is_file() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stdout}{result.stderr}{log}")
        return result

    def start(self) -> PostgresServer:
        if not self.data.is_dir():
            self._as_server_user(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                 "-E", "UTF8", "--no-sync")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._as_server_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                             "-o", options, "start")
        return self

    def stop(self) -> None:
        """Fast shutdown: open sessions are cut off, as when a database host goes down."""
        self._as_server_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").is_file()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "study") -> str:
        """A new, empty database; returns its URL (a fresh study with no Optuna tables yet)."""
        import psycopg

        self._databases += 1
        name = f"{prefix}_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_password_database(self, role: str, password: str) -> str:
        """A new database owned by `role`, which must log in with `password` (SCRAM) over TCP while every other
        role is still trusted; returns its URL without the password."""
        import psycopg

        self._databases += 1
        name = f"secret_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
            connection.execute(f'CREATE DATABASE "{name}" OWNER "{role}"')
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())  # first match wins
        self._as_server_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "reload")
        time.sleep(0.5)  # the postmaster rereads pg_hba.conf on SIGHUP, shortly after pg_ctl returns
        return f"postgresql://{role}@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        """Stop the server (if it runs) and delete its folder."""
        try:
            if self.running():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc) -> None:
        self.remove()


def server_or_skip() -> PostgresServer:
    """A started throwaway server; skip (fail under CI=true) saying why when none can be had."""
    import pytest

    reason = unavailable()
    server = None
    if reason is None:
        try:
            server = PostgresServer()
            server.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            if server is not None:
                server.remove()
            reason = f"the throwaway PostgreSQL server did not start: {error}"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true needs the PostgreSQL tests to run: {reason}")
        pytest.skip(reason)
    return server
