"""Infrastructure every layer of the suite shares: one file lock, one atomic writer, one rank helper.

This module sits at the bottom of the tree (it imports nothing of the suite but the errors), so
callbacks, lightning_modules and sweeps can use it without importing upwards.

* `file_lock` / `try_file_lock`: an exclusive lock on a file, held through ``flock`` (the
  `filelock` package's native Unix lock). The kernel drops it with the process's file descriptor,
  so a SIGKILLed holder never leaves a stale lock, and other nodes of a shared file system wait
  too where that file system supports flock (NFSv4, Lustre, GPFS). `filelock`'s soft-lock
  fallback (a marker file, for file systems without flock) is turned off: a marker outlives a
  killed holder, and every lock of the suite guards work that a killed process must not block.
* `atomic_path`, `write_bytes_atomic`, `write_text_atomic`, `write_json_atomic`: a reader sees
  the old file or the complete new one, never half of one, and the new one survives a power
  loss once the call returns: the data goes to a temporary file in the same folder, is fsynced,
  renamed over the target, and the folder is fsynced (so the rename itself is durable). Every file
  they put in place has the mode the user's umask gives a new file (``0o666 & ~umask``), whoever
  created the temporary file: `tempfile.mkstemp` creates 0600 whatever the umask, and a file kept
  at that mode is unreadable to the colleagues a shared cluster's umask lets read the others.
* `pwrite_all`: all of a buffer written at an offset of an open file (what ``os.pwrite`` alone does not promise).
* `local_rank`, `global_rank`, `is_global_zero`: the process's rank from the launcher's
  environment (Lightning / torchrun: ``LOCAL_RANK``, ``RANK``; SLURM: ``SLURM_LOCALID``,
  ``SLURM_PROCID``), for decisions taken before a Trainer exists.
* `json_safe`: NaN and infinities replaced by None, recursively, for strict JSON and CSV cells.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

TEMP_GLOB = ".*.tmp-*"
"""Glob matching the temporary files `atomic_path` creates (to clean up after a killed writer)."""


# ------------------------------------------------------------------------------------------------
# Locks
# ------------------------------------------------------------------------------------------------
def _lock(path: str | Path) -> FileLock:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path, fallback_to_soft=False)


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created, with its folder, if missing) for the block.

    Blocks until the lock is free. Released when the block ends, and by the kernel when the
    process dies (SIGKILL included). The lock file is left in place (waiters share its inode).
    Two `file_lock` calls on one path exclude each other within one process too.
    """
    lock = _lock(path)
    with lock:
        yield


def try_file_lock(path: str | Path) -> FileLock | None:
    """Take the lock on ``path`` without waiting: the held lock (call ``.release()``), or None when taken."""
    lock = _lock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


# ------------------------------------------------------------------------------------------------
# Atomic writes
# ------------------------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; file systems that cannot sync a folder are let be."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """fsync the file at ``path``: everything any process wrote to it so far is on disk afterwards."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def current_umask() -> int:
    """This process's umask, read without changing it (Linux: /proc/self/status; elsewhere set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it: restore it at once, one thread at a time
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def umask_mode(directory: bool = False) -> int:
    """The mode a new file (``0o666``) or folder (``0o777``) gets under the current umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def _put_in_place(tmp: Path, path: Path) -> None:
    """Give the finished temporary file the umask's mode, make it durable and rename it over ``path``."""
    os.chmod(tmp, umask_mode())
    fsync_file(tmp)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; when the block ends, it replaces ``path`` atomically.

    For files another library writes (an MP3 from soundfile, a PNG from matplotlib, an archive
    from NumPy). The file the block wrote gets the mode the umask gives a new file (whatever mode
    its writer created it with), is fsynced, renamed over ``path`` and the folder fsynced; if the
    block raises, the temporary file is removed and ``path`` is untouched. The folder is created
    if missing.
    """
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        yield tmp
        _put_in_place(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (see the module docstring); returns ``path``.

    The folder is created if missing; the file gets the mode the umask gives a new file.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    return path


def pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of ``data`` (bytes or a buffer) at ``offset`` of the open file ``fd`` (one ``os.pwrite`` may
    write less)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def write_text_atomic(path: str | Path, text: str) -> Path:
    """`write_bytes_atomic` of ``text`` as UTF-8."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any, *, sort_keys: bool = False) -> Path:
    """`write_text_atomic` of ``data`` as indented strict JSON and a final newline.

    NaN or infinity is an error (strict JSON has neither): pass the data through `json_safe` first.
    """
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n")


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, in nested dicts, lists and tuples (as lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


# ------------------------------------------------------------------------------------------------
# Ranks
# ------------------------------------------------------------------------------------------------
def _env_int(*names: str) -> int:
    """The first of the environment variables ``names`` that is set and not empty, as an int (0 if none)."""
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return 0


def local_rank() -> int:
    """This process's rank on its node: ``LOCAL_RANK`` (Lightning, torchrun), else ``SLURM_LOCALID``, else 0."""
    return _env_int("LOCAL_RANK", "SLURM_LOCALID")


def global_rank() -> int:
    """This process's rank in the job: ``RANK`` (Lightning, torchrun), else ``SLURM_PROCID``, else 0."""
    return _env_int("RANK", "SLURM_PROCID")


def is_global_zero() -> bool:
    """True on the job's first process (global and local rank 0), also before any Trainer exists."""
    return global_rank() == 0 and local_rank() == 0
