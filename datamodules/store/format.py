"""The waveform cache's on-disk format: file names, row statuses, the fingerprint, the manifest.

See `datamodules.store` for what each file holds. Both the writer (`datamodules.store.prepare`)
and the reader (`datamodules.store.reader`) take the format from here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from infrastructure.audio import SAMPLE_RATE

CACHE_FORMAT_VERSION = 1
"""Bumped whenever the on-disk layout changes; a cache of another version is rebuilt."""

WAVEFORMS_FILE = "waveforms.int16"
INDEX_FILE = "index.csv"
MANIFEST_FILE = "manifest.json"
PARTIAL_DIR = "partial"
PROGRESS_FILE = "progress.npy"
INPUTS_FILE = "inputs.json"
LOCK_FILE = ".lock"

INDEX_COLUMNS = ("row", "clip_id", "mp3_path", "status", "decoded_samples")
"""Columns of ``index.csv``, in order."""

STATUSES = ("pending", "ok", "missing", "empty", "decode_error", "wrong_length", "wrong_rate")
"""Row statuses; the position is the code stored in ``progress.npy``. ``pending`` never
appears in a finished index."""

STATUS_CODE = {name: code for code, name in enumerate(STATUSES)}
PENDING = STATUS_CODE["pending"]
OK = STATUS_CODE["ok"]

SAMPLE_DTYPE = np.dtype("<i2")
"""Samples are little-endian int16 (`datamodules.store.rows.float_to_int16`)."""


def cache_fingerprint(
    audio_root: str | Path, mp3_paths: Sequence[str], clip_ids: Sequence[int], clip_samples: int
) -> str:
    """SHA-256 over what determines the cache's bytes (see `datamodules.store`)."""
    digest = hashlib.sha256()
    digest.update(f"v{CACHE_FORMAT_VERSION}|{clip_samples}|{SAMPLE_RATE}|{SAMPLE_DTYPE.str}\n".encode())
    root = Path(audio_root)
    for clip_id, rel in zip(clip_ids, mp3_paths):
        try:
            size = os.stat(root / rel).st_size
        except OSError:
            size = -1
        digest.update(f"{int(clip_id)}\t{rel}\t{size}\n".encode())
    return digest.hexdigest()


def read_json(path: Path):
    """Parsed JSON of ``path``, or None when missing or unparsable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def manifest_valid(folder: Path, fingerprint: str | None = None) -> dict | None:
    """The manifest of ``folder`` when it describes a complete cache (and has ``fingerprint``)."""
    manifest = read_json(folder / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("format_version") != CACHE_FORMAT_VERSION:
        return None
    if fingerprint is not None and manifest.get("fingerprint") != fingerprint:
        return None
    try:
        n_rows, clip_samples = int(manifest["n_rows"]), int(manifest["clip_samples"])
        size = (folder / WAVEFORMS_FILE).stat().st_size
    except (KeyError, TypeError, ValueError, OSError):
        return None
    if size != n_rows * clip_samples * SAMPLE_DTYPE.itemsize or not (folder / INDEX_FILE).is_file():
        return None
    return manifest


def read_index(path: Path) -> pd.DataFrame:
    """Read an ``index.csv`` with fixed dtypes (paths and statuses as str, never NaN)."""
    return pd.read_csv(
        path,
        dtype={"row": np.int64, "clip_id": np.int64, "mp3_path": str, "status": str, "decoded_samples": np.int64},
        keep_default_na=False,
    )
