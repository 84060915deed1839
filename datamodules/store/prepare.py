"""Preparing the waveform cache: decoding every clip once, in worker processes, resumable after a kill.

The procedure (``partial/``, progress records, the final renames) is described in
`datamodules.store`; `prepare_cache` is the entry point.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from datamodules.store.format import (
    CACHE_FORMAT_VERSION,
    INDEX_COLUMNS,
    INDEX_FILE,
    INPUTS_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    OK,
    PARTIAL_DIR,
    PENDING,
    PROGRESS_FILE,
    SAMPLE_DTYPE,
    STATUS_CODE,
    STATUSES,
    WAVEFORMS_FILE,
    cache_fingerprint,
    manifest_valid,
    read_index,
    read_json,
)
from datamodules.store.rows import ClipDecoder
from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError, DataError
from infrastructure.io import (
    file_lock,
    fsync_file,
    spawn_can_import_main,
    write_bytes_atomic,
    write_json_atomic,
)

DEFAULT_CHUNK_ROWS = 32
"""Rows per unit of work. A worker holds one decoded clip at a time, so memory does not grow
with the chunk size; the chunk is the granularity of progress (work lost on a kill)."""

ROW_DELAY_ENV = "MTAT_CACHE_TEST_ROW_DELAY_S"
"""Test hook: when set, each worker sleeps this many seconds after writing each row, so a test
can kill a preparation mid-way. Never set it in normal use."""


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

    The rows reach the page cache here; the parent makes them durable (`infrastructure.io.fsync_file`) before it
    records them as done.

    Returns:
        ``(row, status_code, decoded_samples, detail)`` per row.
    """
    delay = float(os.environ.get(ROW_DELAY_ENV) or 0.0)
    row_bytes = clip_samples * SAMPLE_DTYPE.itemsize
    zeros = bytes(row_bytes)
    decoder = ClipDecoder(clip_samples)
    results = []
    fd = os.open(waveforms_path, os.O_WRONLY)
    try:
        for row, rel in zip(rows, mp3_paths):
            clip = decoder.decode(Path(audio_root) / rel)
            _pwrite_all(fd, clip.samples if clip.samples is not None else zeros, row * row_bytes)
            results.append((row, STATUS_CODE[clip.status], clip.decoded_samples, clip.detail))
            if delay:
                time.sleep(delay)
    finally:
        os.close(fd)
    return results


def _save_progress(partial: Path, progress: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, progress, allow_pickle=False)
    write_bytes_atomic(partial / PROGRESS_FILE, buffer.getvalue())


def _locked(cache_dir: Path):
    """Hold the exclusive lock ``cache_dir/.lock`` (`infrastructure.io.file_lock`: released even on SIGKILL)."""
    return file_lock(cache_dir / LOCK_FILE)


def _ensure_writable(cache_dir: Path) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as exc:
        raise DataError(f"cache folder {cache_dir} is not writable: {exc.strerror or exc}") from exc


def _start_partial(partial: Path, fingerprint: str, n_rows: int, clip_samples: int) -> np.ndarray:
    """Return the progress array of ``partial/``, resuming it when it belongs to these inputs.

    Anything in ``partial/`` from other inputs, or damaged, is deleted and started afresh.
    """
    total = n_rows * clip_samples * SAMPLE_DTYPE.itemsize
    inputs = read_json(partial / INPUTS_FILE)
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
    inputs = {"fingerprint": fingerprint, "n_rows": n_rows, "clip_samples": clip_samples}
    write_json_atomic(partial / INPUTS_FILE, inputs, sort_keys=True)
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
        if np.any(progress[start:start + chunk_rows, 0] == PENDING)
    ]
    if not chunks:
        return
    waveforms = str(partial / WAVEFORMS_FILE)
    root = str(audio_root)
    bar = tqdm(total=n_rows, initial=int(np.count_nonzero(progress[:, 0] != PENDING)), unit="clip",
               desc="decoding clips", file=sys.stderr, disable=not show_progress)

    def record(*chunk_results):
        # Durable rows first, then the progress that says they are done (the workers only write
        # to the page cache: one fsync here covers every chunk finished so far, while they decode on).
        fsync_file(waveforms)
        for results in chunk_results:
            for row, code, decoded, _detail in results:
                progress[row] = (code, decoded)
        _save_progress(partial, progress)
        bar.update(sum(len(results) for results in chunk_results))

    try:
        if workers <= 1 or len(chunks) == 1 or not spawn_can_import_main():
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
    write_bytes_atomic(partial / INDEX_FILE, text.getvalue().encode("utf-8"))
    manifest = {
        "format_version": CACHE_FORMAT_VERSION,
        "clip_samples": int(clip_samples),
        "sample_rate": SAMPLE_RATE,
        "n_rows": len(mp3_paths),
        "n_ok": int(np.count_nonzero(progress[:, 0] == OK)),
        "dtype": SAMPLE_DTYPE.str,
        "fingerprint": fingerprint,
    }
    write_json_atomic(partial / MANIFEST_FILE, manifest, sort_keys=True)


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
    """Decode every clip once into ``cache_dir`` (see `datamodules.store`); return ``cache_dir``.

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
        if manifest_valid(cache_dir, fingerprint) is not None:
            inputs = read_json(partial / INPUTS_FILE)
            if isinstance(inputs, dict) and inputs.get("fingerprint") == fingerprint:
                shutil.rmtree(partial, ignore_errors=True)  # leftover of a finished run
            return cache_dir
        if manifest_valid(partial, fingerprint) is None:  # otherwise only the renames remain
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
