"""Reading a finished waveform cache: `open_cache` and `WaveformCache` (memory-mapped, read-only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.store.format import (
    CACHE_FORMAT_VERSION,
    INDEX_COLUMNS,
    INDEX_FILE,
    MANIFEST_FILE,
    PARTIAL_DIR,
    SAMPLE_DTYPE,
    WAVEFORMS_FILE,
    manifest_valid,
    read_index,
)
from infrastructure.audio import INT16_SCALE
from infrastructure.errors import DataError


class WaveformCache:
    """A finished waveform cache, opened read-only.

    Attributes:
        path: the cache folder.
        manifest: the parsed ``manifest.json``.
        clip_samples: samples per row.
        sample_rate: sample rate of the cached audio (Hz).
        index: DataFrame with columns `INDEX_COLUMNS`, one row per cache row.
        ok_rows: int64 array of the rows whose status is ``ok`` (the only rows ever served).

    The memmap behind `waveforms` opens on first access in each process; pickling drops it,
    so the object can be sent to DataLoader worker processes and DDP ranks.
    """

    def __init__(self, cache_dir: str | Path):
        self.path = Path(cache_dir)
        if not self.path.is_dir():
            raise DataError(f"waveform cache {self.path} does not exist: prepare it first")
        manifest = manifest_valid(self.path)
        if manifest is None:
            state = "an interrupted preparation" if (self.path / PARTIAL_DIR).exists() else "no complete cache"
            raise DataError(
                f"waveform cache {self.path} is incomplete or invalid ({state}: no valid {MANIFEST_FILE} "
                f"of format {CACHE_FORMAT_VERSION} matching {WAVEFORMS_FILE}); run the preparation again"
            )
        try:
            index = read_index(self.path / INDEX_FILE)
        except (OSError, ValueError) as exc:
            raise DataError(f"waveform cache {self.path}: unreadable {INDEX_FILE}: {exc}") from exc
        n_rows = int(manifest["n_rows"])
        if tuple(index.columns) != INDEX_COLUMNS or len(index) != n_rows or not np.array_equal(index["row"], np.arange(n_rows)):
            raise DataError(f"waveform cache {self.path}: {INDEX_FILE} does not match {MANIFEST_FILE} ({n_rows} rows)")
        self.manifest = manifest
        self.clip_samples = int(manifest["clip_samples"])
        self.sample_rate = int(manifest["sample_rate"])
        self.index = index
        self.ok_rows = np.flatnonzero(index["status"].to_numpy() == "ok").astype(np.int64)
        self._ok_mask = index["status"].to_numpy() == "ok"
        self._waveforms: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.index)

    @property
    def waveforms(self) -> np.memmap:
        """(n_rows, clip_samples) read-only int16 memmap; failed rows are zeros (do not serve them)."""
        if self._waveforms is None:
            self._waveforms = np.memmap(
                self.path / WAVEFORMS_FILE, dtype=SAMPLE_DTYPE, mode="r", shape=(len(self.index), self.clip_samples)
            )
        return self._waveforms

    def read(self, row: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """float32 samples ``[start, start + length)`` of an ``ok`` row, scaled to [-1, 1).

        Raises:
            DataError: the row failed to decode (its status is not ``ok``) or is out of range.
            ValueError: the sample range lies outside the clip.
        """
        if not 0 <= row < len(self.index) or not self._ok_mask[row]:
            status = self.index["status"].iat[row] if 0 <= row < len(self.index) else "out of range"
            raise DataError(f"waveform cache {self.path}: row {row} is not servable (status {status})")
        length = self.clip_samples - start if length is None else length
        if start < 0 or length < 0 or start + length > self.clip_samples:
            raise ValueError(f"samples [{start}, {start + length}) outside a clip of {self.clip_samples}")
        return self.waveforms[row, start:start + length].astype(np.float32) / np.float32(INT16_SCALE)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_waveforms"] = None
        return state


def open_cache(cache_dir: str | Path) -> WaveformCache:
    """Open a finished cache read-only.

    Raises:
        DataError: the folder is absent, or holds no complete cache (no valid manifest, e.g.
            an interrupted preparation).
    """
    return WaveformCache(cache_dir)
