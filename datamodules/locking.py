"""One exclusive file lock for every "only one process at a time" section of the suite."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX systems have no flock
    fcntl = None


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file `path` (created if missing) for the `with` block.

    The lock is released when the block ends and, because the kernel drops it with the file
    descriptor, also when the process is killed (SIGKILL included). Processes on other nodes of a
    shared file system wait too where the file system supports flock (NFSv4, Lustre, GPFS).
    """
    path = Path(path)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
