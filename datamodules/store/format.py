"""The waveform store's on-disk format, shared by both layouts: file names, statuses, fingerprint, manifest.

See `datamodules.store` for what each file holds. The writers (`datamodules.store.journal`,
`datamodules.store.fixed`, `datamodules.store.ragged`) and the reader (`datamodules.store.reader`)
take the format from here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from datamodules.decoding import DECODE_STATUSES, SAMPLE_DTYPE

FORMAT_VERSION = 1
"""Bumped whenever the on-disk layout changes; a store of another version is rebuilt. It is part of
every fingerprint, so a store written before the two layouts shared this module is reused as it is."""

WAVEFORMS_FILE = "waveforms.int16"
OFFSETS_FILE = "offsets.npy"
INDEX_FILE = "index.csv"
MANIFEST_FILE = "manifest.json"
PARTIAL_DIR = "partial"
INPUTS_FILE = "inputs.json"
JOURNAL_FILE = "journal.tsv"
LOCK_FILE = ".lock"

STATUSES = ("pending", "ok") + DECODE_STATUSES
"""Row statuses: ``pending`` (not decoded yet; never in a finished index), ``ok`` (stored), or why the
file could not be used (`datamodules.decoding.DECODE_STATUSES`). The position is the code that
stores written before the journal was shared kept in ``partial/progress.npy``."""


@dataclass(frozen=True)
class Layout:
    """How rows lie in ``waveforms.int16`` and which files a finished store holds (manifest last).

    ``fixed``: every row exactly ``clip_samples`` long (a failed row is zeros), row i at ``i * clip_samples``;
    the manifest has ``n_rows`` and ``clip_samples``. ``ragged``: the usable rows one after the other,
    row i at ``offsets[i]:offsets[i + 1]`` (a skipped row is empty); the manifest has ``n_tracks``,
    ``total_samples`` and ``excerpt_samples``.
    """

    name: str
    files: tuple[str, ...]
    unit: str
    """What a row is called in messages."""
    appends: bool
    """Rows are appended in order (ragged), rather than written in place into a pre-sized file (fixed)."""

    def stored_samples(self, manifest: dict) -> int:
        """Samples ``waveforms.int16`` holds according to ``manifest`` (KeyError/TypeError/ValueError if unreadable)."""
        if self is FIXED:
            return int(manifest["n_rows"]) * int(manifest["clip_samples"])
        return int(manifest["total_samples"])


FIXED = Layout("fixed", (WAVEFORMS_FILE, INDEX_FILE, MANIFEST_FILE), unit="clips", appends=False)
RAGGED = Layout("ragged", (WAVEFORMS_FILE, OFFSETS_FILE, INDEX_FILE, MANIFEST_FILE), unit="tracks", appends=True)


def layout_of(manifest: dict) -> Layout:
    """The layout a manifest describes (a ragged manifest is the one with ``total_samples``)."""
    return RAGGED if "total_samples" in manifest else FIXED


def fingerprint(header: str, rows: Iterable[tuple[object, str, str | Path]]) -> str:
    """SHA-256 over what determines a store's bytes: ``v<FORMAT_VERSION>|<header>`` and, per row, its key,
    the path it is recorded under and the size of the file (-1 when missing) at ``file``.

    Sizes, not contents: replacing a broken file with a good one rebuilds the store, while re-extracting
    the same archive does not.
    """
    digest = hashlib.sha256()
    digest.update(f"v{FORMAT_VERSION}|{header}\n".encode())
    for key, recorded, file in rows:
        try:
            size = os.stat(file).st_size
        except OSError:
            size = -1
        digest.update(f"{key}\t{recorded}\t{size}\n".encode())
    return digest.hexdigest()


def read_json(path: Path):
    """Parsed JSON of ``path``, or None when missing or unparsable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def valid_manifest(folder: Path, fingerprint: str | None = None) -> dict | None:
    """The manifest of ``folder`` when it describes a complete store (with ``fingerprint``, when given):
    the right format version, a waveform file of the size it states, and every file of its layout."""
    manifest = read_json(folder / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        return None
    if fingerprint is not None and manifest.get("fingerprint") != fingerprint:
        return None
    layout = layout_of(manifest)
    try:
        size = (folder / WAVEFORMS_FILE).stat().st_size
        samples = layout.stored_samples(manifest)
    except (KeyError, TypeError, ValueError, OSError):
        return None
    if size != samples * SAMPLE_DTYPE.itemsize or not all((folder / name).is_file() for name in layout.files):
        return None
    return manifest
