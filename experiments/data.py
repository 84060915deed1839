"""The one-time data work of a run: generating and decoding once per node, under a lock, the others waiting."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from datamodules.datamodule import DatasetInfo, MTATDataModule
from infrastructure.errors import DataError
from infrastructure.io import file_lock, local_rank


@contextlib.contextmanager
def _prepare_lock(cache_root: Path):
    """The lock that serialises data preparation (processes on other nodes of a shared file system wait too)."""
    lock = cache_root / ".prepare.lock"
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError as error:  # e.g. --cache-dir under a file, or in a read-only folder
        raise DataError(f"cache folder {cache_root} (--cache-dir) is not writable: "
                        f"{error.strerror or error}") from None
    with file_lock(lock):
        yield


def prepare_data_once(datamodule: MTATDataModule, timeout_s: float = 24 * 3600) -> DatasetInfo:
    """Do the data module's one-time work on one process per node; the others wait for it.

    This runs before the Trainer exists (the model's size depends on the data), so Lightning's own
    prepare_data barrier is not available yet: a lock file serialises processes that share a file
    system, and processes with a non-zero local rank wait until the cache can be opened.
    """
    if local_rank() == 0:
        with _prepare_lock(datamodule.cache_root):
            datamodule.prepare_data()
    else:
        deadline = time.monotonic() + timeout_s
        while True:
            with _prepare_lock(datamodule.cache_root):
                try:
                    datamodule.dataset_info()
                    datamodule.open_prepared()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
            time.sleep(5)
    return datamodule.dataset_info()

