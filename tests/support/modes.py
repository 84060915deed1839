"""File modes under a chosen umask: every file the suite writes must get ``0o666 & ~umask``, every folder
``0o777 & ~umask`` (a shared cluster's umask lets colleagues read runs; a 0600 file would lock them out)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

UMASKS = (0o022, 0o027)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[int]:
    """Run the block under `mask` (this process only; restored afterwards)."""
    old = os.umask(mask)
    try:
        yield mask
    finally:
        os.umask(old)


def wrong_modes(root: Path, mask: int) -> list[str]:
    """Every file and folder under `root` (itself included) whose mode is not what `mask` gives a new one."""
    wrong = []
    for path in [Path(root), *sorted(Path(root).rglob("*"))]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue  # a symbolic link's own mode means nothing
        expected = (0o777 if stat.S_ISDIR(info.st_mode) else 0o666) & ~mask
        if stat.S_IMODE(info.st_mode) != expected:
            wrong.append(f"{path} {oct(stat.S_IMODE(info.st_mode))} (expected {oct(expected)})")
    return wrong
