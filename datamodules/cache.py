"""Decode every MTAT clip once into one on-disk int16 array, then read it fast.

Decoding a 30 s MP3 costs about 6 ms of CPU; an epoch over MTAT would spend minutes on it.
`prepare_cache` decodes each clip once, in parallel worker processes, into a cache folder:

``waveforms.int16``
    raw little-endian int16, shape (n_rows, clip_samples), row i = annotation row i, samples
    scaled by `INT16_SCALE` (float x -> round(x * 32768) clipped to int16). Rows that failed
    to decode are all zeros and are never served.
``index.csv``
    one line per row: ``row, clip_id, mp3_path, status, decoded_samples``.
``manifest.json``
    ``format_version, clip_samples, sample_rate, n_rows, n_ok, dtype, fingerprint``: written
    last; a folder without a valid manifest is not a cache.

`open_cache` returns a `WaveformCache` that maps ``waveforms.int16`` read-only on first access
in each process (it pickles without the mapping, so it works in DataLoader workers and DDP).

Statuses (`STATUSES`)
---------------------
``ok``
    decoded; within `LENGTH_TOLERANCE` samples of ``clip_samples`` (zero-padded or trimmed to
    exactly ``clip_samples``; the decoded length is recorded). Stereo is averaged to mono.
``missing`` / ``empty``
    no file / a zero-byte file (three MP3s of the official MTAT download are zero bytes).
``decode_error``
    libsndfile refused the file. It reports garbage files with the misleading text "File does
    not exist or is not a regular file", so the status is decided from our own checks first.
``wrong_length``
    decoded length off by more than `LENGTH_TOLERANCE` (a truncated MP3 decodes without error
    but short).
``wrong_rate``
    sample rate other than `SAMPLE_RATE`.

Every status but ``ok`` is a skipped clip: zero-filled, excluded from `WaveformCache.ok_rows`,
and listed in one warning at the end of the preparation.

Interruption, resumption, atomicity
-----------------------------------
Work happens in ``cache_dir/partial/``: ``inputs.json`` (fingerprint of the inputs),
``waveforms.int16`` (pre-sized sparse file that workers write rows into with ``pwrite``) and
``progress.npy`` (status and decoded length per row, status 0 = pending). A worker writes a
chunk's rows; the main process fsyncs the waveform file before it marks them in
``progress.npy`` (one fsync for every chunk finished so far, while the workers decode on), which
it replaces atomically (write tmp, fsync, ``os.replace``). A process killed at any point (SIGKILL
included) loses at most the chunks in flight; the next call redoes them, and since decoding is
deterministic the result is byte-identical to an uninterrupted run. When every row is done the
index and the manifest are written into ``partial/``, the old cache's manifest (if any) is
removed, and the files are renamed into ``cache_dir`` with the manifest last; a rerun after a
kill during these renames completes them. A cache whose fingerprint differs from the current
inputs is rebuilt from scratch in ``partial/`` (never mixed) and stays usable for `open_cache`
until the new one is ready to replace it. A lock file (``cache_dir/.lock``, ``flock``) keeps
two processes (e.g. DDP ranks) from preparing the same folder at once.

The fingerprint covers the format version, clip length, sample rate and, per row, the clip id,
mp3 path and MP3 file size (so replacing a broken MP3 with a good one triggers a rebuild, while
re-extracting the same zip does not). The audio root's location is not part of it: a dataset
folder can move without invalidating its cache.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import soundfile as sf

from datamodules.audio import INT16_SCALE, SAMPLE_RATE
from datamodules.errors import ConfigError, DataError
from datamodules.locking import file_lock


CACHE_FORMAT_VERSION = 1
"""Bumped whenever the on-disk layout changes; a cache of another version is rebuilt."""

LENGTH_TOLERANCE = 1152
"""Largest accepted difference between decoded and expected clip length, in samples: two
MPEG-2 layer III frames (576 samples each at 16 kHz)."""

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

_STATUS_CODE = {name: code for code, name in enumerate(STATUSES)}
_PENDING = _STATUS_CODE["pending"]
_OK = _STATUS_CODE["ok"]

DEFAULT_CHUNK_ROWS = 32
"""Rows per unit of work. A worker holds one decoded clip at a time, so memory does not grow
with the chunk size; the chunk is the granularity of progress (work lost on a kill)."""

ROW_DELAY_ENV = "MTAT_CACHE_TEST_ROW_DELAY_S"
"""Test hook: when set, each worker sleeps this many seconds after writing each row, so a test
can kill a preparation mid-way. Never set it in normal use."""

_DTYPE = np.dtype("<i2")
_READ_BLOCK = 1 << 16


@dataclass(frozen=True)
class DecodedClip:
    """Result of decoding one MP3 for the cache.

    Attributes:
        status: one of `STATUSES` (never ``pending``).
        decoded_samples: length decoded (0 when nothing was decoded).
        samples: (clip_samples,) int16 when ``status == "ok"``, else None.
        detail: a short human-readable reason for a failed status ("" when ok).
    """

    status: str
    decoded_samples: int
    samples: np.ndarray | None
    detail: str = ""


def float_to_int16(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Map float audio in [-1, 1] to int16 the way the cache stores it (round(x * 32768), clipped).

    Works in float32: scaling by 2^15 is exact in float32, so the result equals the float64
    computation, about 25x faster (this conversion used to cost more than the decoding). With
    ``out`` (int16, same length) the result is written there and ``x`` (float32) is used as
    scratch space and overwritten; without it ``x`` is left alone.
    """
    if out is None:
        scaled = np.multiply(x, np.float32(INT16_SCALE), dtype=np.float32)
    else:
        scaled = np.multiply(x, np.float32(INT16_SCALE), out=x)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768, 32767, out=scaled)
    if out is None:
        return scaled.astype(_DTYPE)
    np.copyto(out, scaled, casting="unsafe")
    return out


class ClipDecoder:
    """Decodes MP3s to the cache's mono int16 rows, reusing its buffers from clip to clip.

    A fresh 1.9 MB float buffer per clip costs page faults and zeroing comparable to a third of
    the MP3 decoding itself; a worker keeps one decoder for its whole chunk. The ``samples`` of a
    returned `DecodedClip` is a view into the decoder's buffer, valid until the next `decode`.
    """

    def __init__(self, clip_samples: int) -> None:
        self.clip_samples = int(clip_samples)
        self.limit = self.clip_samples + LENGTH_TOLERANCE + 1
        self._float: dict[int, np.ndarray] = {}  # per channel count: (limit, channels) float32
        self._row = np.zeros(self.clip_samples, dtype=_DTYPE)

    def _float_buffer(self, channels: int) -> np.ndarray:
        if channels not in self._float:
            self._float[channels] = np.empty((self.limit, channels), dtype=np.float32)
        return self._float[channels]

    def decode(self, path: Path) -> DecodedClip:
        """Decode one MP3 to mono int16 of exactly ``clip_samples`` samples, or say why not.

        Memory is bounded by one clip: at most ``clip_samples + LENGTH_TOLERANCE + 1`` frames are
        kept; the rest of an over-long file is only counted.
        """
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError:
            return DecodedClip("missing", 0, None, "no such file")
        if not path.is_file():
            return DecodedClip("missing", 0, None, "not a regular file")
        if size == 0:
            return DecodedClip("empty", 0, None, "zero-byte file")
        clip_samples, limit = self.clip_samples, self.limit
        try:
            with sf.SoundFile(str(path)) as handle:
                if handle.samplerate != SAMPLE_RATE:
                    return DecodedClip("wrong_rate", 0, None, f"{handle.samplerate} Hz, expected {SAMPLE_RATE} Hz")
                # soundfile.read() seeks to the start first; after a seek libsndfile's MP3 path
                # returns values that differ by 1 ulp from a fresh read. Do the same, so that rows
                # equal soundfile.read(path, dtype="float32") exactly.
                handle.seek(0)
                buffer = self._float_buffer(handle.channels)
                data = handle.read(frames=limit, dtype="float32", always_2d=True, out=buffer)
                decoded = len(data)
                if decoded == limit:  # longer than accepted: count the rest without keeping it
                    while True:
                        block = handle.read(frames=_READ_BLOCK, dtype="float32", always_2d=True)
                        if not len(block):
                            break
                        decoded += len(block)
        except (RuntimeError, OSError, ValueError) as exc:
            # libsndfile says "File does not exist" for garbage; we already know the file exists.
            return DecodedClip("decode_error", 0, None, f"{type(exc).__name__}: {exc}")
        if abs(decoded - clip_samples) > LENGTH_TOLERANCE:
            return DecodedClip("wrong_length", decoded, None, f"{decoded} samples, expected {clip_samples}")
        n = min(clip_samples, len(data))
        mono = data[:n].mean(axis=1) if data.shape[1] > 1 else data[:n, 0]
        float_to_int16(mono, out=self._row[:n])
        self._row[n:] = 0
        return DecodedClip("ok", decoded, self._row)


def decode_clip(path: Path, clip_samples: int) -> DecodedClip:
    """`ClipDecoder.decode` for a single file (its samples are the caller's own array)."""
    return ClipDecoder(clip_samples).decode(path)


def _pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of ``data`` (bytes or a buffer) at ``offset`` (``os.pwrite`` may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _process_chunk(
    audio_root: str, waveforms_path: str, clip_samples: int, rows: list[int], mp3_paths: list[str]
) -> list[tuple[int, int, int, str]]:
    """Decode the given rows and write them (zeros for failures); run in a worker.

    The rows reach the page cache here; the parent makes them durable (`_sync_file`) before it
    records them as done.

    Returns:
        ``(row, status_code, decoded_samples, detail)`` per row.
    """
    delay = float(os.environ.get(ROW_DELAY_ENV) or 0.0)
    row_bytes = clip_samples * _DTYPE.itemsize
    zeros = bytes(row_bytes)
    decoder = ClipDecoder(clip_samples)
    results = []
    fd = os.open(waveforms_path, os.O_WRONLY)
    try:
        for row, rel in zip(rows, mp3_paths):
            clip = decoder.decode(Path(audio_root) / rel)
            _pwrite_all(fd, clip.samples if clip.samples is not None else zeros, row * row_bytes)
            results.append((row, _STATUS_CODE[clip.status], clip.decoded_samples, clip.detail))
            if delay:
                time.sleep(delay)
    finally:
        os.close(fd)
    return results


def _sync_file(path: str) -> None:
    """fsync ``path``: every row any process wrote to it so far is on disk afterwards."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cache_fingerprint(
    audio_root: str | Path, mp3_paths: Sequence[str], clip_ids: Sequence[int], clip_samples: int
) -> str:
    """SHA-256 over what determines the cache's bytes (see the module docstring)."""
    digest = hashlib.sha256()
    digest.update(f"v{CACHE_FORMAT_VERSION}|{clip_samples}|{SAMPLE_RATE}|{_DTYPE.str}\n".encode())
    root = Path(audio_root)
    for clip_id, rel in zip(clip_ids, mp3_paths):
        try:
            size = os.stat(root / rel).st_size
        except OSError:
            size = -1
        digest.update(f"{int(clip_id)}\t{rel}\t{size}\n".encode())
    return digest.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours the umask
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _atomic_write_json(path: Path, obj) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _save_progress(partial: Path, progress: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, progress, allow_pickle=False)
    _atomic_write_bytes(partial / PROGRESS_FILE, buffer.getvalue())


def _read_json(path: Path):
    """Parsed JSON of ``path``, or None when missing or unparsable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _locked(cache_dir: Path):
    """Hold an exclusive ``flock`` on ``cache_dir/.lock`` (released even on SIGKILL)."""
    return file_lock(cache_dir / LOCK_FILE)


def _ensure_writable(cache_dir: Path) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as exc:
        raise DataError(f"cache folder {cache_dir} is not writable: {exc.strerror or exc}") from exc


def _manifest_valid(folder: Path, fingerprint: str | None = None) -> dict | None:
    """The manifest of ``folder`` when it describes a complete cache (and has ``fingerprint``)."""
    manifest = _read_json(folder / MANIFEST_FILE)
    if not isinstance(manifest, dict) or manifest.get("format_version") != CACHE_FORMAT_VERSION:
        return None
    if fingerprint is not None and manifest.get("fingerprint") != fingerprint:
        return None
    try:
        n_rows, clip_samples = int(manifest["n_rows"]), int(manifest["clip_samples"])
        size = (folder / WAVEFORMS_FILE).stat().st_size
    except (KeyError, TypeError, ValueError, OSError):
        return None
    if size != n_rows * clip_samples * _DTYPE.itemsize or not (folder / INDEX_FILE).is_file():
        return None
    return manifest


def _start_partial(partial: Path, fingerprint: str, n_rows: int, clip_samples: int) -> np.ndarray:
    """Return the progress array of ``partial/``, resuming it when it belongs to these inputs.

    Anything in ``partial/`` from other inputs, or damaged, is deleted and started afresh.
    """
    total = n_rows * clip_samples * _DTYPE.itemsize
    inputs = _read_json(partial / INPUTS_FILE)
    waveforms = partial / WAVEFORMS_FILE
    resumable = (
        isinstance(inputs, dict)
        and inputs.get("fingerprint") == fingerprint
        and waveforms.is_file()
        and waveforms.stat().st_size == total
    )
    if resumable:
        try:
            progress = np.load(partial / PROGRESS_FILE, allow_pickle=False)
        except (OSError, ValueError):
            progress = None
        if progress is None or progress.shape != (n_rows, 2) or progress.dtype != np.int64:
            progress = np.zeros((n_rows, 2), dtype=np.int64)
        return progress
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    with open(waveforms, "wb") as handle:  # sparse: blocks are allocated as rows are written
        handle.truncate(total)
    _atomic_write_json(partial / INPUTS_FILE, {"fingerprint": fingerprint, "n_rows": n_rows, "clip_samples": clip_samples})
    return np.zeros((n_rows, 2), dtype=np.int64)


def _check_free_space(partial: Path) -> None:
    """DataError when the disk cannot hold the rest of the (sparse) waveform file."""
    waveforms = partial / WAVEFORMS_FILE
    info = waveforms.stat()
    allocated = getattr(info, "st_blocks", 0) * 512
    needed = max(0, info.st_size - allocated)
    free = shutil.disk_usage(partial).free
    if needed > free:
        raise DataError(
            f"cache folder {partial.parent}: not enough disk space: the waveform cache needs "
            f"{needed / 1e9:.2f} GB more, {free / 1e9:.2f} GB free"
        )


class _Progress:
    """Progress over rows on stderr: tqdm when installed, else a line at most once a second."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self._bar = None
        self._enabled = enabled
        self._total, self._done, self._last = total, initial, 0.0
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self._bar = tqdm(total=total, initial=initial, unit="clip", desc="decoding clips", file=sys.stderr)

    def update(self, n: int) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._enabled and (time.monotonic() - self._last >= 1.0 or self._done == self._total):
            self._last = time.monotonic()
            print(f"decoding clips: {self._done}/{self._total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _spawn_can_import_main() -> bool:
    """False when spawned workers could not re-import ``__main__`` (a script read from stdin);
    decoding then runs in this process instead of failing."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.exists(main_file)


def _decode_pending(
    partial: Path,
    progress: np.ndarray,
    audio_root: Path,
    mp3_paths: Sequence[str],
    clip_samples: int,
    workers: int,
    chunk_rows: int,
    show_progress: bool,
) -> None:
    """Decode every chunk that is not yet complete, persisting progress after each chunk."""
    n_rows = len(mp3_paths)
    chunks = [
        list(range(start, min(start + chunk_rows, n_rows)))
        for start in range(0, n_rows, chunk_rows)
        if np.any(progress[start:start + chunk_rows, 0] == _PENDING)
    ]
    if not chunks:
        return
    waveforms = str(partial / WAVEFORMS_FILE)
    root = str(audio_root)
    bar = _Progress(n_rows, int(np.count_nonzero(progress[:, 0] != _PENDING)), show_progress)

    def record(*chunk_results):
        # Durable rows first, then the progress that says they are done (the workers only write
        # to the page cache: one fsync here covers every chunk finished so far, while they decode on).
        _sync_file(waveforms)
        for results in chunk_results:
            for row, code, decoded, _detail in results:
                progress[row] = (code, decoded)
        _save_progress(partial, progress)
        bar.update(sum(len(results) for results in chunk_results))

    try:
        if workers <= 1 or len(chunks) == 1 or not _spawn_can_import_main():
            for rows in chunks:
                record(_process_chunk(root, waveforms, clip_samples, rows, [mp3_paths[r] for r in rows]))
            return
        context = multiprocessing.get_context("spawn")  # fork is unsafe once torch threads exist
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=context) as pool:
            pending = {
                pool.submit(_process_chunk, root, waveforms, clip_samples, rows, [mp3_paths[r] for r in rows])
                for rows in chunks
            }
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    record(*(future.result() for future in done))
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    except BrokenProcessPool as exc:
        raise DataError(
            f"cache folder {partial.parent}: a decoding worker process died ({exc}; killed, or out of "
            "memory?); the work done so far is kept and a rerun continues from there"
        ) from exc
    except OSError as exc:
        raise DataError(
            f"cache folder {partial.parent}: writing the waveform cache failed ({exc}); "
            "the work done so far is kept and a rerun continues from there"
        ) from exc
    finally:
        bar.close()


def _write_index_and_manifest(
    partial: Path, progress: np.ndarray, clip_ids: Sequence[int], mp3_paths: Sequence[str], clip_samples: int, fingerprint: str
) -> None:
    """Write ``partial/index.csv`` then ``partial/manifest.json``, both atomically."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    for row, (clip_id, rel) in enumerate(zip(clip_ids, mp3_paths)):
        writer.writerow((row, int(clip_id), rel, STATUSES[progress[row, 0]], int(progress[row, 1])))
    _atomic_write_bytes(partial / INDEX_FILE, text.getvalue().encode("utf-8"))
    manifest = {
        "format_version": CACHE_FORMAT_VERSION,
        "clip_samples": int(clip_samples),
        "sample_rate": SAMPLE_RATE,
        "n_rows": len(mp3_paths),
        "n_ok": int(np.count_nonzero(progress[:, 0] == _OK)),
        "dtype": _DTYPE.str,
        "fingerprint": fingerprint,
    }
    _atomic_write_json(partial / MANIFEST_FILE, manifest)


def _move_into_place(partial: Path, cache_dir: Path) -> None:
    """Rename the finished files from ``partial/`` into ``cache_dir`` (manifest last), idempotently.

    The old cache's manifest is removed first, so no moment exists where a manifest describes
    a mix of old and new files. Resumable: files already moved are skipped.
    """
    (cache_dir / MANIFEST_FILE).unlink(missing_ok=True)
    for name in (WAVEFORMS_FILE, INDEX_FILE, MANIFEST_FILE):
        if (partial / name).exists():
            os.replace(partial / name, cache_dir / name)
    shutil.rmtree(partial)


def _warn_skipped(cache_dir: Path) -> None:
    index = read_index(cache_dir / INDEX_FILE)
    skipped = index[index["status"] != "ok"]
    if len(skipped):
        lines = "\n".join(f"  {p} ({s})" for p, s in zip(skipped["mp3_path"], skipped["status"]))
        warnings.warn(
            f"waveform cache {cache_dir}: {len(skipped)} of {len(index)} clips could not be used "
            f"and are skipped:\n{lines}",
            stacklevel=3,
        )


def prepare_cache(
    audio_root: str | Path,
    mp3_paths: Sequence[str],
    clip_ids: Sequence[int],
    cache_dir: str | Path,
    clip_samples: int,
    workers: int | None = None,
    progress: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Path:
    """Decode every clip once into ``cache_dir`` (see the module docstring); return ``cache_dir``.

    Returns at once when ``cache_dir`` already holds a complete cache of the same inputs;
    resumes an interrupted preparation of the same inputs; rebuilds when the inputs changed.
    Emits one warning listing every skipped clip (path and status) when it builds a cache.

    Args:
        audio_root: folder holding the ``0``..``f`` MP3 folders (`mtat.find_audio_root`).
        mp3_paths: per row, the MP3 path relative to ``audio_root``.
        clip_ids: per row, the clip id (recorded in the index).
        cache_dir: the cache folder (created if needed).
        clip_samples: samples per clip (`mtat.dataset_clip_samples`).
        workers: decoding processes (default ``os.cpu_count()``), started with ``spawn`` (so the
            calling script needs an ``if __name__ == "__main__":`` guard); 1 decodes in this process.
        progress: show a progress bar on stderr.
        chunk_rows: rows per unit of work and progress record.

    Raises:
        ConfigError: inconsistent arguments.
        DataError: the cache folder is unwritable, the disk is too small, or writing failed.
            Work already done (and any previous complete cache) is kept.
    """
    if len(mp3_paths) != len(clip_ids):
        raise ConfigError(f"prepare_cache: {len(mp3_paths)} mp3 paths but {len(clip_ids)} clip ids")
    if not len(mp3_paths):
        raise ConfigError("prepare_cache: no clips to cache")
    for name, value in (("clip_samples", clip_samples), ("chunk_rows", chunk_rows)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"prepare_cache: {name} must be a positive integer, got {value!r}")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    audio_root, cache_dir = Path(audio_root), Path(cache_dir)
    mp3_paths = [str(p) for p in mp3_paths]
    _ensure_writable(cache_dir)
    fingerprint = cache_fingerprint(audio_root, mp3_paths, clip_ids, int(clip_samples))
    partial = cache_dir / PARTIAL_DIR
    with _locked(cache_dir):
        if _manifest_valid(cache_dir, fingerprint) is not None:
            inputs = _read_json(partial / INPUTS_FILE)
            if isinstance(inputs, dict) and inputs.get("fingerprint") == fingerprint:
                shutil.rmtree(partial, ignore_errors=True)  # leftover of a finished run
            return cache_dir
        if _manifest_valid(partial, fingerprint) is None:  # otherwise only the renames remain
            try:
                progress_rows = _start_partial(partial, fingerprint, len(mp3_paths), int(clip_samples))
            except OSError as exc:
                raise DataError(f"cache folder {cache_dir}: cannot create the partial cache: {exc}") from exc
            _check_free_space(partial)
            _decode_pending(
                partial, progress_rows, audio_root, mp3_paths, int(clip_samples), workers, int(chunk_rows), progress
            )
            _write_index_and_manifest(partial, progress_rows, clip_ids, mp3_paths, int(clip_samples), fingerprint)
        _move_into_place(partial, cache_dir)
    _warn_skipped(cache_dir)
    return cache_dir


def read_index(path: Path) -> pd.DataFrame:
    """Read an ``index.csv`` with fixed dtypes (paths and statuses as str, never NaN)."""
    return pd.read_csv(
        path,
        dtype={"row": np.int64, "clip_id": np.int64, "mp3_path": str, "status": str, "decoded_samples": np.int64},
        keep_default_na=False,
    )


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
        manifest = _manifest_valid(self.path)
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
                self.path / WAVEFORMS_FILE, dtype=_DTYPE, mode="r", shape=(len(self.index), self.clip_samples)
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
