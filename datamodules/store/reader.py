"""Reading a finished waveform store, either layout: `open_store` and the store classes (memory-mapped, read-only).

Both layouts are one int16 file read through offsets: row i is samples ``offsets[i]:offsets[i + 1]``
(the fixed layout's offsets are multiples of its clip length), so the data module reads either the same
way (`WaveformStore.segment`). What differs is the index each keeps (`FixedStore.index`: a DataFrame of
clip ids, MP3 paths, statuses and decoded lengths; `RaggedStore.index`: one `IndexEntry` per track).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.decoding import SAMPLE_DTYPE
from datamodules.store.format import (
    FIXED,
    FORMAT_VERSION,
    INDEX_FILE,
    MANIFEST_FILE,
    OFFSETS_FILE,
    PARTIAL_DIR,
    RAGGED,
    WAVEFORMS_FILE,
    Layout,
    layout_of,
    valid_manifest,
)
from infrastructure.audio import INT16_SCALE
from infrastructure.errors import DataError

FIXED_INDEX_COLUMNS = ("row", "clip_id", "mp3_path", "status", "decoded_samples")
"""Columns of a fixed-length store's ``index.csv`` (comma-separated), in order."""

RAGGED_INDEX_COLUMNS = ("row", "key", "path", "status", "samples", "detail")
"""Columns of a ragged store's ``index.csv`` (tab-separated), in order."""


class WaveformStore:
    """A finished store, opened read-only; `open_store` gives the class of its layout.

    Attributes:
        folder: the store folder.
        manifest: the parsed ``manifest.json``.
        offsets: int64 (n_rows + 1,): row i is samples ``offsets[i]:offsets[i + 1]`` of ``waveforms.int16``.
        ok_rows: int64 array of the rows whose status is ``ok`` (the only rows ever served).

    The memory map opens on first access in each process; pickling drops it, so a store can be sent
    to DataLoader worker processes and DDP ranks.
    """

    layout: Layout

    def __init__(self, folder: Path, manifest: dict, offsets: np.ndarray, statuses: np.ndarray):
        self.folder = Path(folder)
        self.manifest = manifest
        self.offsets = offsets
        self.ok_rows = np.flatnonzero(statuses == "ok").astype(np.int64)
        self._ok = statuses == "ok"
        self._waveforms: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_waveforms"] = None
        return state

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["sample_rate"])

    @property
    def lengths(self) -> np.ndarray:
        """(n_rows,) samples per row (a skipped ragged row: 0; a failed fixed-length row: its zeros)."""
        return np.diff(self.offsets)

    @property
    def index_path(self) -> Path:
        return self.folder / INDEX_FILE

    def _mapped(self) -> np.ndarray:
        if self._waveforms is None:
            total = int(self.offsets[-1])
            self._waveforms = (np.zeros(0, dtype=SAMPLE_DTYPE) if total == 0 else
                               np.memmap(self.folder / WAVEFORMS_FILE, dtype=SAMPLE_DTYPE, mode="r", shape=(total,)))
        return self._waveforms

    def track(self, row: int) -> np.ndarray:
        """The stored samples of ``row`` (a read-only int16 view)."""
        return self._mapped()[self.offsets[row]:self.offsets[row + 1]]

    def segment(self, row: int, start: int, length: int) -> np.ndarray:
        """``length`` int16 samples of ``row`` from ``start`` (a copy), zero-padded past the row's end."""
        piece = self.track(row)[max(0, start):max(0, start + length)]
        if len(piece) == length:
            return np.array(piece)
        out = np.zeros(length, dtype=SAMPLE_DTYPE)
        out[:len(piece)] = piece
        return out

    @property
    def keys(self) -> list[str]:
        """Each row's key: the clip or track id it was written for."""
        raise NotImplementedError

    def skipped(self) -> list[tuple[str, str, str]]:
        """``(name, status, detail)`` of every row that is not ``ok``."""
        raise NotImplementedError


class FixedStore(WaveformStore):
    """A fixed-length store (MTAT's clips): every row ``clip_samples`` long, failed rows zero-filled.

    Attributes:
        clip_samples: samples per row.
        index: DataFrame with columns `FIXED_INDEX_COLUMNS`, one row per store row.
    """

    layout = FIXED

    def __init__(self, folder: Path, manifest: dict):
        import pandas as pd

        n_rows, clip_samples = int(manifest["n_rows"]), int(manifest["clip_samples"])
        try:
            index = pd.read_csv(folder / INDEX_FILE, keep_default_na=False, dtype={
                "row": np.int64, "clip_id": np.int64, "mp3_path": str, "status": str, "decoded_samples": np.int64})
        except (OSError, ValueError) as exc:
            raise DataError(f"waveform store {folder}: unreadable {INDEX_FILE}: {exc}") from exc
        if (tuple(index.columns) != FIXED_INDEX_COLUMNS or len(index) != n_rows
                or not np.array_equal(index["row"], np.arange(n_rows))):
            raise DataError(f"waveform store {folder}: {INDEX_FILE} does not match {MANIFEST_FILE} ({n_rows} rows)")
        super().__init__(folder, manifest, np.arange(n_rows + 1, dtype=np.int64) * clip_samples,
                         index["status"].to_numpy())
        self.clip_samples = clip_samples
        self.index = index

    @property
    def waveforms(self) -> np.memmap:
        """(n_rows, clip_samples) read-only int16 memmap; failed rows are zeros (do not serve them)."""
        return self._mapped().reshape(len(self), self.clip_samples)

    def read(self, row: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """float32 samples ``[start, start + length)`` of an ``ok`` row, scaled to [-1, 1).

        Raises:
            DataError: the row failed to decode (its status is not ``ok``) or is out of range.
            ValueError: the sample range lies outside the clip.
        """
        if not 0 <= row < len(self) or not self._ok[row]:
            status = self.index["status"].iat[row] if 0 <= row < len(self) else "out of range"
            raise DataError(f"waveform store {self.folder}: row {row} is not servable (status {status})")
        length = self.clip_samples - start if length is None else length
        if start < 0 or length < 0 or start + length > self.clip_samples:
            raise ValueError(f"samples [{start}, {start + length}) outside a clip of {self.clip_samples}")
        return self.waveforms[row, start:start + length].astype(np.float32) / np.float32(INT16_SCALE)

    @property
    def keys(self) -> list[str]:
        return [str(clip_id) for clip_id in self.index["clip_id"].tolist()]

    def skipped(self) -> list[tuple[str, str, str]]:
        failed = self.index[self.index["status"] != "ok"]
        return [(path, status, "") for path, status in zip(failed["mp3_path"], failed["status"])]


@dataclass(frozen=True)
class IndexEntry:
    """One line of a ragged store's ``index.csv``."""

    row: int
    key: str
    path: str
    status: str
    samples: int
    detail: str


class RaggedStore(WaveformStore):
    """A ragged store (MTG-Jamendo's tracks): the usable tracks one after the other, skipped ones empty.

    Attributes:
        index: one `IndexEntry` per track.
    """

    layout = RAGGED

    def __init__(self, folder: Path, manifest: dict):
        try:
            offsets = np.load(folder / OFFSETS_FILE, allow_pickle=False)
            with open(folder / INDEX_FILE, encoding="utf-8", newline="") as handle:
                reader = csv.reader(handle, delimiter="\t")
                header = next(reader)
                index = [IndexEntry(int(r[0]), r[1], r[2], r[3], int(r[4]), r[5]) for r in reader]
        except (OSError, ValueError, IndexError, StopIteration) as exc:
            raise DataError(f"waveform store {folder}: unreadable index: {exc}") from exc
        n = int(manifest["n_tracks"])
        if (tuple(header) != RAGGED_INDEX_COLUMNS or len(index) != n or offsets.shape != (n + 1,)
                or int(offsets[-1]) != int(manifest["total_samples"])
                or any(int(b - a) != e.samples for a, b, e in zip(offsets[:-1], offsets[1:], index))):
            raise DataError(f"waveform store {folder}: index, offsets and manifest disagree; delete the folder "
                            "and rebuild")
        super().__init__(folder, manifest, offsets, np.array([entry.status for entry in index], dtype=object))
        self.index = index

    @property
    def keys(self) -> list[str]:
        return [entry.key for entry in self.index]

    def skipped(self) -> list[tuple[str, str, str]]:
        return [(entry.key, entry.status, entry.detail) for entry in self.index if entry.status != "ok"]


def open_store(folder: str | Path) -> WaveformStore:
    """Open the finished store in ``folder``: a `FixedStore` or a `RaggedStore`, as its manifest says.

    Raises:
        DataError: the folder is absent, holds no complete store (no valid manifest, e.g. an interrupted
            preparation), or its index disagrees with its manifest.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a complete waveform store: the folder does not exist (prepare the data "
                        "first)")
    manifest = valid_manifest(folder)
    if manifest is None:
        state = "an interrupted preparation" if (folder / PARTIAL_DIR).exists() else "no complete store"
        raise DataError(f"{folder} is not a complete waveform store: it is incomplete or invalid ({state}: no valid "
                        f"{MANIFEST_FILE} of format {FORMAT_VERSION} matching {WAVEFORMS_FILE}); run the preparation "
                        "again")
    return (RaggedStore if layout_of(manifest) is RAGGED else FixedStore)(folder, manifest)
