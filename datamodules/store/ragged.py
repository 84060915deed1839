"""A waveform store for tracks of different lengths: one int16 file plus an offsets index.

MTAT's cache (`datamodules.store`) is a rectangle, one row per 29 s clip. MTG-Jamendo's tracks
are full length (mean 244 s, some over 20 min), so a rectangle would be mostly padding. This
store concatenates the tracks instead::

    waveforms.int16   raw little-endian int16, every usable track one after the other
    offsets.npy       int64 (n_tracks + 1,): track i is samples offsets[i]:offsets[i+1]
                      (a skipped track has offsets[i] == offsets[i+1])
    index.csv         row, key, path, status, samples, detail (one line per input track)
    manifest.json     format_version, sample_rate, n_tracks, n_ok, total_samples,
                      excerpt_samples, fingerprint: written last; no valid manifest, no store

At 16 kHz int16 the whole of MTG-Jamendo (55,701 tracks x 244 s) is about 435 GB; with
``excerpt_samples`` (e.g. the middle 30 s, 480,000 samples) each track keeps only its middle
part and the store is about 53 GB.

Writing (`write_ragged_store`) is one pass in input order, bounded in memory whatever the
number or length of the tracks: `decode_audio` reads and resamples a track in blocks of
``block_samples`` (default 30 s) and each block goes to disk before the next is decoded, so the
writer holds one block (plus the resampler's margins) at a time.

Resumption and atomicity: work happens in ``folder/partial/``: ``inputs.json`` (the
fingerprint), ``waveforms.int16`` (appended in input order) and ``journal.tsv``, one line per
finished track (``row, status, samples, detail``). Every ``commit_bytes`` of audio (and at the
end) the waveform file is fsynced, then the lines of the tracks written since are appended to
the journal and it is fsynced: the journal never names audio that is not on disk. A process
killed at any point (SIGKILL included) leaves a journal whose complete lines are a prefix of the
rows; the next call keeps exactly those, truncates the waveform file to the samples they
account for (anything written after the last commit is dropped) and continues with the next
row. Decoding is deterministic, so the result is byte-identical to an uninterrupted run. When
every row is done, ``offsets.npy``, ``index.csv`` and the manifest are written into
``partial/``, the old manifest (if any) is removed and the files are renamed into ``folder``,
manifest last. A fingerprint mismatch (other inputs, sizes, sample rate or excerpt length)
starts ``partial/`` afresh. A ``flock`` on ``folder/.lock`` keeps two processes from writing the
same store at once.

Tracks that cannot be used are skipped (no samples), recorded in the index with a status
(`STATUSES`) and a detail, and listed in one warning at the end.

Plugging in: the DataModule's cache for long tracks calls `write_ragged_store` with
``items = [(track_id, str(audio_root / path)) ...]`` and `open_ragged_store` in each process;
`RaggedStore.read` serves random training chunks and evenly spread evaluation chunks without
loading a track.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from datamodules.store.prepare import _pwrite_all
from datamodules.store.rows import float_to_int16
from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError, DataError
from infrastructure.io import file_lock, spawn_can_import_main, write_bytes_atomic

STORE_FORMAT_VERSION = 1
"""Bumped whenever the on-disk layout changes; a store of another version is rebuilt."""

WAVEFORMS_FILE = "waveforms.int16"
OFFSETS_FILE = "offsets.npy"
INDEX_FILE = "index.csv"
MANIFEST_FILE = "manifest.json"
PARTIAL_DIR = "partial"
INPUTS_FILE = "inputs.json"
JOURNAL_FILE = "journal.tsv"
LOCK_FILE = ".lock"

INDEX_COLUMNS = ("row", "key", "path", "status", "samples", "detail")

STATUSES = ("ok", "missing", "empty", "decode_error", "truncated")
"""``ok``: stored. ``missing``: no such file. ``empty``: a zero-byte file, or one that decodes to
no samples. ``decode_error``: the decoder refused the file. ``truncated``: the file decoded to
fewer frames than its header announces (a cut-off MP3 decodes without error, only short)."""

DEFAULT_COMMIT_BYTES = 64 << 20
"""Audio written between two commits (fsync + journal lines): the most a kill can lose."""

DEFAULT_BLOCK_SAMPLES = 30 * SAMPLE_RATE
"""Output samples `decode_audio` produces per block (30 s: 0.96 MB of int16)."""

TRUNCATION_TOLERANCE = 1152
"""Source frames a decoded file may fall short of its announced length (two MP3 frames) before
it counts as truncated."""

_DTYPE = np.dtype("<i2")


class TrackSkipped(Exception):
    """Raised by a decoder for a track that cannot be stored; ``status`` is one of `STATUSES`."""

    def __init__(self, status: str, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


Decoder = Callable[[str], Iterable[np.ndarray]]
"""A decoder maps a path to int16 blocks (mono, the store's sample rate) or raises
`TrackSkipped`; `RuntimeError`, `OSError` and `ValueError` count as ``decode_error``."""


# ------------------------------------------------------------------------------------------------
# Decoding in blocks
# ------------------------------------------------------------------------------------------------

def _excerpt_range(total: int, excerpt_samples: int | None) -> tuple[int, int]:
    """The output samples kept of a track of ``total``: all, or the middle ``excerpt_samples``."""
    if excerpt_samples is None or total <= excerpt_samples:
        return 0, total
    start = (total - excerpt_samples) // 2
    return start, start + excerpt_samples


def decode_audio(path: str, sample_rate: int = SAMPLE_RATE, excerpt_samples: int | None = None,
                 block_samples: int = DEFAULT_BLOCK_SAMPLES) -> Iterator[np.ndarray]:
    """Yield the track at ``path`` as mono int16 blocks at ``sample_rate`` (only its middle
    ``excerpt_samples`` when given and shorter than the track).

    Resampling is `scipy.signal.resample_poly` by ``up/down = sample_rate/source_rate``. A block
    covers whole groups of ``up`` output samples, i.e. source frames at multiples of ``down``,
    where the polyphase filter of a whole-file call is aligned the same way; each block is
    resampled with enough source frames on either side for the filter's support (its
    ``10 * max(up, down)`` taps at the upsampled rate), so the blocks join into what one call on
    the whole track gives, to float rounding. Memory: one block and its margins, whatever the
    track's length. An excerpt is read by seeking (sample-exact in libsndfile), never decoding
    the rest.

    Raises:
        TrackSkipped: missing or zero-byte file, no frames, or a truncated file (see `STATUSES`).
        RuntimeError: libsndfile refused the file (the caller records ``decode_error``).
    """
    import soundfile as sf

    try:
        size = os.stat(path).st_size
    except OSError:
        raise TrackSkipped("missing", "no such file") from None
    if size == 0:
        raise TrackSkipped("empty", "zero-byte file")
    with sf.SoundFile(path) as handle:
        source_rate, frames = handle.samplerate, handle.frames
        if frames <= 0:
            raise TrackSkipped("empty", "no audio frames")
        ratio = Fraction(sample_rate, source_rate)
        up, down = ratio.numerator, ratio.denominator
        total = -(-frames * up // down)  # resample_poly's output length: ceil(frames * up / down)
        start, stop = _excerpt_range(total, excerpt_samples)
        # Margin, in groups of `down` source frames, covering the filter's half-length.
        margin = 0 if up == down == 1 else math.ceil(10 * max(up, down) / up / down) + 1
        step = max(up, (block_samples // up) * up)
        position = start
        while position < stop:
            end = min(stop, (position // up) * up + step)
            first_group = max(0, position // up - margin)
            last_group = -(-end // up) + margin
            src_start = first_group * down
            src_stop = min(frames, last_group * down)
            handle.seek(src_start)
            data = handle.read(frames=src_stop - src_start, dtype="float32", always_2d=True)
            if len(data) < src_stop - src_start - TRUNCATION_TOLERANCE:
                raise TrackSkipped("truncated", f"decoded {src_start + len(data)} of {frames} frames")
            mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
            if up != down:
                from scipy.signal import (
                    resample_poly,  # imported only when needed: ~1-4 s here
                )

                mono = resample_poly(mono, up, down).astype(np.float32, copy=False)
            offset = first_group * up
            piece = mono[position - offset:end - offset]
            if len(piece) < end - position:  # short read within the tolerance: pad the last block
                piece = np.concatenate([piece, np.zeros(end - position - len(piece), np.float32)])
            yield float_to_int16(np.ascontiguousarray(piece, dtype=np.float32))
            position = end


def default_decoder(sample_rate: int = SAMPLE_RATE, excerpt_samples: int | None = None,
                    block_samples: int = DEFAULT_BLOCK_SAMPLES) -> Decoder:
    """`decode_audio` with these settings, as a picklable one-argument decoder."""
    return functools.partial(decode_audio, sample_rate=sample_rate, excerpt_samples=excerpt_samples,
                             block_samples=block_samples)


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def _decode_into(decoder: Decoder, path: str, excerpt_samples: int | None,
                 sink: Callable[[np.ndarray, int], None]) -> tuple[str, str, int]:
    """Decode ``path`` block by block into ``sink(block, offset in samples)``: (status, detail, samples).

    Decoding failures become a status (the track is skipped and recorded). A failing sink (the
    store's disk full or gone) is not the track's fault and raises a DataError, as does a decoder
    breaking the excerpt limit: the tracks committed so far are kept and a rerun continues.
    """
    written = 0
    try:
        for block in decoder(path):
            block = np.ascontiguousarray(block, dtype=_DTYPE)
            if excerpt_samples is not None and written + len(block) > excerpt_samples:
                raise DataError(f"ragged store: the decoder returned more than excerpt_samples="
                                f"{excerpt_samples} samples for {path}")
            try:
                sink(block, written)
            except OSError as exc:
                raise write_failed(path, exc) from exc
            written += len(block)
    except TrackSkipped as exc:
        return exc.status, exc.detail, 0
    except DataError:
        raise
    except (RuntimeError, OSError, ValueError) as exc:
        return "decode_error", f"{type(exc).__name__}: {exc}", 0
    return ("ok", "", written) if written else ("empty", "no samples decoded", 0)


def write_failed(path: str, error: OSError) -> DataError:
    return DataError(f"ragged store: writing the samples of {path} failed ({type(error).__name__}: {error}); the "
                     "tracks written so far are kept and a rerun continues from there")


def _decode_whole(decoder: Decoder, path: str, excerpt_samples: int | None) -> tuple[str, str, np.ndarray]:
    """A worker's task: the whole track as one int16 array (empty unless its status is ok)."""
    parts: list[np.ndarray] = []
    status, detail, _ = _decode_into(decoder, path, excerpt_samples, lambda block, offset: parts.append(block))
    samples = np.concatenate(parts) if status == "ok" else np.zeros(0, _DTYPE)
    return status, detail, samples


def _decode_in_parallel(decoder: Decoder, items: Sequence[tuple[str, str]], rows: range,
                        excerpt_samples: int | None, workers: int):
    """Yield (row, (status, detail, samples)) for ``rows`` in order, decoded by ``workers`` processes."""
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch threads exist
    upcoming = iter(rows)
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(rows)), mp_context=context) as pool:
            window: deque = deque()

            def submit() -> None:
                row = next(upcoming, None)
                if row is not None:
                    window.append((row, pool.submit(_decode_whole, decoder, items[row][1], excerpt_samples)))

            for _ in range(2 * workers):
                submit()
            try:
                while window:
                    row, future = window.popleft()
                    result = future.result()
                    submit()
                    yield row, result
            except BaseException:
                for _, future in window:
                    future.cancel()
                raise
    except BrokenProcessPool as exc:
        raise DataError(f"ragged store: a decoding worker process died ({exc}; killed, or out of memory?); "
                        "the tracks written so far are kept and a rerun continues from there") from exc

def store_fingerprint(items: Sequence[tuple[str, str]], sample_rate: int, excerpt_samples: int | None,
                      extra: str = "") -> str:
    """SHA-256 over what determines the store's bytes: format, rate, excerpt, and per track the
    key, path and file size (-1 when missing), plus ``extra`` (e.g. a custom decoder's identity)."""
    digest = hashlib.sha256()
    digest.update(f"v{STORE_FORMAT_VERSION}|{sample_rate}|{excerpt_samples}|{_DTYPE.str}|{extra}\n".encode())
    for key, path in items:
        try:
            size = os.stat(path).st_size
        except OSError:
            size = -1
        digest.update(f"{key}\t{path}\t{size}\n".encode())
    return digest.hexdigest()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_journal(journal: Path, n_rows: int) -> list[tuple[str, int, str]]:
    """The committed (status, samples, detail) of rows 0..k-1: complete lines numbered 0, 1, ...
    in order; the journal is truncated after the last such line (a torn tail is dropped)."""
    try:
        data = journal.read_bytes()
    except OSError:
        return []
    entries: list[tuple[str, int, str]] = []
    keep = 0
    for line in data.split(b"\n")[:-1]:  # the part after the last newline is incomplete
        fields = line.decode("utf-8", "replace").split("\t", 3)
        try:
            row, status, samples = int(fields[0]), fields[1], int(fields[2])
        except (IndexError, ValueError):
            break
        if row != len(entries) or status not in STATUSES or samples < 0 or row >= n_rows:
            break
        entries.append((status, samples, fields[3] if len(fields) > 3 else ""))
        keep += len(line) + 1
    if keep != len(data):
        with open(journal, "r+b") as handle:
            handle.truncate(keep)
    return entries


def _start_partial(partial: Path, fingerprint: str, n_rows: int) -> list[tuple[str, int, str]]:
    """The committed journal entries of ``partial/`` when it belongs to ``fingerprint`` (the
    waveform file cut to what they account for); otherwise ``partial/`` is started afresh."""
    inputs = _read_json(partial / INPUTS_FILE)
    waveforms = partial / WAVEFORMS_FILE
    if isinstance(inputs, dict) and inputs.get("fingerprint") == fingerprint and waveforms.is_file():
        entries = _read_journal(partial / JOURNAL_FILE, n_rows)
        committed = sum(samples for status, samples, _ in entries if status == "ok") * _DTYPE.itemsize
        if waveforms.stat().st_size >= committed:
            with open(waveforms, "r+b") as handle:
                handle.truncate(committed)
            return entries
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    (partial / WAVEFORMS_FILE).touch()
    (partial / JOURNAL_FILE).touch()
    write_bytes_atomic(partial / INPUTS_FILE, json.dumps({"fingerprint": fingerprint, "n_tracks": n_rows}).encode())
    return []


def _clean(text: str) -> str:
    return " ".join(str(text).split())  # one line, no tabs: journal and index stay parseable


def _manifest_valid(folder: Path, fingerprint: str | None = None) -> dict | None:
    """The manifest of ``folder`` when it describes a complete store (with ``fingerprint``)."""
    manifest = _read_json(folder / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("format_version") != STORE_FORMAT_VERSION:
        return None
    if fingerprint is not None and manifest.get("fingerprint") != fingerprint:
        return None
    try:
        size = (folder / WAVEFORMS_FILE).stat().st_size
        total = int(manifest["total_samples"])
    except (KeyError, TypeError, ValueError, OSError):
        return None
    if size != total * _DTYPE.itemsize or not (folder / INDEX_FILE).is_file() or not (folder / OFFSETS_FILE).is_file():
        return None
    return manifest


def _finish(folder: Path, partial: Path, items, entries, fingerprint: str, sample_rate: int,
            excerpt_samples: int | None) -> None:
    """Write offsets, index and manifest into ``partial/`` and move everything into ``folder``."""
    lengths = np.array([samples if status == "ok" else 0 for status, samples, _ in entries], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    buffer = io.BytesIO()
    np.save(buffer, offsets, allow_pickle=False)
    write_bytes_atomic(partial / OFFSETS_FILE, buffer.getvalue())
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    for row, ((key, path), (status, samples, detail)) in enumerate(zip(items, entries)):
        writer.writerow([row, key, path, status, samples, detail])
    write_bytes_atomic(partial / INDEX_FILE, text.getvalue().encode("utf-8"))
    manifest = {
        "format_version": STORE_FORMAT_VERSION, "sample_rate": sample_rate, "n_tracks": len(entries),
        "n_ok": int(sum(status == "ok" for status, _, _ in entries)), "total_samples": int(offsets[-1]),
        "excerpt_samples": excerpt_samples, "dtype": _DTYPE.str, "fingerprint": fingerprint,
    }
    write_bytes_atomic(partial / MANIFEST_FILE, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    (folder / MANIFEST_FILE).unlink(missing_ok=True)  # the old store stops being valid first
    for name in (WAVEFORMS_FILE, OFFSETS_FILE, INDEX_FILE, MANIFEST_FILE):
        os.replace(partial / name, folder / name)
    shutil.rmtree(partial)


def _warn_skipped(folder: Path, items, entries) -> None:
    skipped = [(key, path, status, detail) for (key, path), (status, _, detail) in zip(items, entries)
               if status != "ok"]
    if not skipped:
        return
    shown = "; ".join(f"{key} ({status}: {detail})" for key, _, status, detail in skipped[:20])
    more = f"; and {len(skipped) - 20} more" if len(skipped) > 20 else ""
    warnings.warn(f"{folder}: {len(skipped)} of {len(entries)} tracks skipped, listed in "
                  f"{folder / INDEX_FILE}: {shown}{more}", stacklevel=3)


def write_ragged_store(folder: str | Path, items: Sequence[tuple[str, str]], *,
                       decoder: Decoder | None = None, sample_rate: int = SAMPLE_RATE,
                       excerpt_samples: int | None = None, commit_bytes: int = DEFAULT_COMMIT_BYTES,
                       fingerprint_extra: str = "", workers: int = 1,
                       on_commit: Callable[[int], None] | None = None) -> RaggedStore:
    """Decode every ``(key, path)`` of ``items`` in order into the store ``folder``; return it
    opened. A complete store with the same fingerprint is returned as it is; an interrupted one
    is resumed (see the module docstring).

    Args:
        decoder: path -> int16 blocks (default: `decode_audio` at ``sample_rate`` with
            ``excerpt_samples``). A custom decoder must honour ``excerpt_samples`` itself; give
            its identity in ``fingerprint_extra`` so a change of decoder rebuilds the store.
        excerpt_samples: keep at most this many samples per track, the middle ones.
        commit_bytes: audio bytes between commits (the most a kill loses).
        workers: decoding processes. With more than one, each decodes whole tracks (int16 at the
            store's rate: about 1 MB per 30 s) while this process writes them in order; at most
            2 x workers tracks are in flight, so memory stays bounded by the longest tracks.
        on_commit: called with the number of committed rows after each commit (progress, tests).

    Raises:
        ConfigError: bad options or duplicate keys.
        DataError: the folder cannot be written, or a decoder returned more than
            ``excerpt_samples`` samples.
    """
    folder = Path(folder)
    items = [(str(key), str(path)) for key, path in items]
    keys = [key for key, _ in items]
    if len(set(keys)) != len(keys):
        raise ConfigError("ragged store: track keys must be unique")
    if excerpt_samples is not None and (isinstance(excerpt_samples, bool) or int(excerpt_samples) < 1):
        raise ConfigError(f"ragged store: excerpt_samples must be a positive integer, got {excerpt_samples!r}")
    if int(commit_bytes) < 1:
        raise ConfigError(f"ragged store: commit_bytes must be positive, got {commit_bytes!r}")
    if isinstance(workers, bool) or int(workers) < 1:
        raise ConfigError(f"ragged store: workers must be a positive integer, got {workers!r}")
    workers = int(workers)
    decoder = decoder or default_decoder(sample_rate, excerpt_samples)
    fingerprint = store_fingerprint(items, sample_rate, excerpt_samples, fingerprint_extra)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"ragged store {folder}: cannot create it: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK):
        raise DataError(f"ragged store {folder}: not writable")
    with file_lock(folder / LOCK_FILE):
        if _manifest_valid(folder, fingerprint) is not None:
            return open_ragged_store(folder)
        partial = folder / PARTIAL_DIR
        entries = _start_partial(partial, fingerprint, len(items))
        position = sum(samples for status, samples, _ in entries if status == "ok") * _DTYPE.itemsize
        wave_fd = os.open(partial / WAVEFORMS_FILE, os.O_WRONLY)
        journal_fd = os.open(partial / JOURNAL_FILE, os.O_WRONLY | os.O_APPEND)
        pending: list[bytes] = []
        since_commit = 0

        def commit() -> None:
            nonlocal since_commit
            os.fsync(wave_fd)
            if pending:
                os.write(journal_fd, b"".join(pending))
                pending.clear()
                os.fsync(journal_fd)
            since_commit = 0
            if on_commit is not None:
                on_commit(len(entries))

        def record(row: int, status: str, detail: str, samples: int) -> None:
            nonlocal position, since_commit
            entries.append((status, samples, _clean(detail)))
            pending.append(f"{row}\t{status}\t{samples}\t{_clean(detail)}\n".encode())
            position += samples * _DTYPE.itemsize
            since_commit += samples * _DTYPE.itemsize
            if since_commit >= commit_bytes:
                commit()

        rows = range(len(entries), len(items))
        try:
            if workers <= 1 or len(rows) < 2 or not spawn_can_import_main():
                for row in rows:
                    start = position

                    def sink(block: np.ndarray, offset: int) -> None:
                        _pwrite_all(wave_fd, block, start + offset * _DTYPE.itemsize)

                    record(row, *_decode_into(decoder, items[row][1], excerpt_samples, sink))
            else:
                for row, (status, detail, samples) in _decode_in_parallel(decoder, items, rows, excerpt_samples,
                                                                          workers):
                    try:
                        _pwrite_all(wave_fd, samples, position)
                    except OSError as exc:
                        raise write_failed(items[row][1], exc) from exc
                    record(row, status, detail, len(samples))
            commit()
        finally:
            os.close(wave_fd)
            os.close(journal_fd)
        with open(partial / WAVEFORMS_FILE, "r+b") as handle:  # drop bytes of a failed last track
            handle.truncate(position)
        _finish(folder, partial, items, entries, fingerprint, sample_rate, excerpt_samples)
    _warn_skipped(folder, items, entries)
    return open_ragged_store(folder)


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IndexEntry:
    """One line of ``index.csv``."""

    row: int
    key: str
    path: str
    status: str
    samples: int
    detail: str


class RaggedStore:
    """A finished store, opened read-only; maps ``waveforms.int16`` lazily in each process and
    pickles without the mapping (DataLoader workers, DDP)."""

    def __init__(self, folder: Path, manifest: dict, offsets: np.ndarray, index: list[IndexEntry]):
        self.folder = folder
        self.manifest = manifest
        self.offsets = offsets
        self.index = index
        self._data: np.ndarray | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_data"] = None
        return state

    def __len__(self) -> int:
        return len(self.index)

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["sample_rate"])

    @property
    def lengths(self) -> np.ndarray:
        """(n_tracks,) stored samples per track (0 for skipped tracks)."""
        return np.diff(self.offsets)

    @property
    def keys(self) -> list[str]:
        return [entry.key for entry in self.index]

    @property
    def ok_rows(self) -> np.ndarray:
        return np.array([i for i, entry in enumerate(self.index) if entry.status == "ok"], dtype=np.int64)

    def _mapped(self) -> np.ndarray:
        if self._data is None:
            total = int(self.offsets[-1])
            if total == 0:
                self._data = np.zeros(0, dtype=_DTYPE)
            else:
                self._data = np.memmap(self.folder / WAVEFORMS_FILE, dtype=_DTYPE, mode="r", shape=(total,))
        return self._data

    def track(self, row: int) -> np.ndarray:
        """The stored samples of ``row`` (a read-only int16 view; empty for a skipped track)."""
        return self._mapped()[self.offsets[row]:self.offsets[row + 1]]

    def read(self, row: int, start: int, length: int) -> np.ndarray:
        """``length`` samples of ``row`` from ``start`` (int16 copy), zero-padded past the end."""
        track = self.track(row)
        out = np.zeros(length, dtype=_DTYPE)
        piece = track[max(0, start):max(0, start + length)]
        out[:len(piece)] = piece
        return out


def open_ragged_store(folder: str | Path) -> RaggedStore:
    """Open the finished store in ``folder``.

    Raises:
        DataError: no complete store there, or its offsets and index disagree with the manifest.
    """
    folder = Path(folder)
    manifest = _manifest_valid(folder)
    if manifest is None:
        raise DataError(f"{folder}: not a complete waveform store (no valid {MANIFEST_FILE}); write it first")
    try:
        offsets = np.load(folder / OFFSETS_FILE, allow_pickle=False)
        with open(folder / INDEX_FILE, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = next(reader)
            index = [IndexEntry(int(r[0]), r[1], r[2], r[3], int(r[4]), r[5]) for r in reader]
    except (OSError, ValueError, IndexError, StopIteration) as exc:
        raise DataError(f"{folder}: unreadable waveform store index: {exc}") from exc
    n = int(manifest["n_tracks"])
    if (tuple(header) != INDEX_COLUMNS or len(index) != n or offsets.shape != (n + 1,)
            or int(offsets[-1]) != int(manifest["total_samples"])
            or any(int(b - a) != e.samples for a, b, e in zip(offsets[:-1], offsets[1:], index))):
        raise DataError(f"{folder}: waveform store index, offsets and manifest disagree; delete the folder and rebuild")
    return RaggedStore(folder, manifest, offsets, index)
