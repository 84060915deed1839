"""The fixed-length layout (MTAT's clips): one MP3 in, one row of exactly ``clip_samples`` out.

`prepare_cache` decodes every clip once, in chunks of rows spread over worker processes, into a
pre-sized (sparse) waveform file: a worker writes its chunk's rows in place, and the parent records
the chunk in the journal once the rows are durable (`datamodules.store.journal.write_store`). A rerun
after a kill redoes the chunks the journal does not hold completely. `FixedSpec` is what a dataset
reader with clips of one length hands the data module.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.decoding import LENGTH_TOLERANCE, SAMPLE_DTYPE, AudioDecodeError, AudioDecoder, float_to_int16
from datamodules.store.format import FIXED, FORMAT_VERSION, INDEX_FILE, MANIFEST_FILE, WAVEFORMS_FILE, fingerprint
from datamodules.store.journal import Entry, Journal, write_store
from datamodules.store.reader import FIXED_INDEX_COLUMNS, FixedStore, WaveformStore
from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError, DataError
from infrastructure.io import pwrite_all
from infrastructure.workers import WorkerPool

DEFAULT_CHUNK_ROWS = 32
"""Rows per unit of work. A worker holds one decoded clip at a time, so memory does not grow
with the chunk size; the chunk is the granularity of progress (work lost on a kill)."""

ROW_DELAY_ENV = "MTAT_CACHE_TEST_ROW_DELAY_S"
"""Test hook: when set, each worker sleeps this many seconds after writing each row, so a test
can kill a preparation mid-way. Never set it in normal use."""


@dataclass(frozen=True)
class DecodedClip:
    """Result of decoding one file for a fixed-length row.

    Attributes:
        status: one of `datamodules.store.format.STATUSES` (never ``pending``).
        decoded_samples: length decoded (0 when nothing was decoded).
        samples: (clip_samples,) int16 when ``status == "ok"``, else None.
        detail: a short human-readable reason for a failed status ("" when ok).
    """

    status: str
    decoded_samples: int
    samples: np.ndarray | None
    detail: str = ""


class ClipDecoder:
    """Decodes files to mono int16 rows of exactly ``clip_samples``, reusing its buffers from clip to clip.

    The file checks, the decoding and its messages are `datamodules.decoding.AudioDecoder`'s (no
    resampling: a file at another rate is skipped; the length is judged here: within `LENGTH_TOLERANCE`
    samples of ``clip_samples`` it is zero-padded or trimmed, beyond it is ``wrong_length``). A worker
    keeps one decoder for its whole chunk, so the float buffer is allocated once; the ``samples`` of a
    returned `DecodedClip` is a view into the decoder's buffer, valid until the next `decode`. Rows equal
    the float32 samples soundfile reads from the whole file, scaled by `float_to_int16`.
    """

    def __init__(self, clip_samples: int) -> None:
        self.clip_samples = int(clip_samples)
        self.limit = self.clip_samples + LENGTH_TOLERANCE + 1
        self._decoder = AudioDecoder(resample=False, strict=False)
        self._row = np.zeros(self.clip_samples, dtype=SAMPLE_DTYPE)

    def decode(self, path: Path) -> DecodedClip:
        """Decode one file to mono int16 of exactly ``clip_samples`` samples, or say why not.

        Memory is bounded by one clip: at most ``clip_samples + LENGTH_TOLERANCE + 1`` frames are
        kept; the rest of an over-long file is only counted.
        """
        clip_samples = self.clip_samples
        try:
            audio = self._decoder.decode(path, keep_frames=self.limit)
        except AudioDecodeError as error:
            return DecodedClip(error.status, 0, None, error.detail)
        decoded = audio.decoded_frames
        if abs(decoded - clip_samples) > LENGTH_TOLERANCE:
            return DecodedClip("wrong_length", decoded, None, f"{decoded} samples, expected {clip_samples}")
        n = min(clip_samples, len(audio.waveform))
        float_to_int16(audio.waveform[:n], out=self._row[:n])
        self._row[n:] = 0
        return DecodedClip("ok", decoded, self._row)


def decode_clip(path: Path, clip_samples: int) -> DecodedClip:
    """`ClipDecoder.decode` for a single file (its samples are the caller's own array)."""
    return ClipDecoder(clip_samples).decode(path)


def _process_chunk(
    audio_root: str, waveforms_path: str, clip_samples: int, rows: list[int], mp3_paths: list[str]
) -> list[tuple[int, str, int, str]]:
    """Decode the given rows and write them in place (zeros for failures); run in a worker.

    The rows reach the page cache here; the parent makes them durable before it journals them.

    Returns:
        ``(row, status, decoded_samples, detail)`` per row.
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
            pwrite_all(fd, clip.samples if clip.samples is not None else zeros, row * row_bytes)
            results.append((row, clip.status, clip.decoded_samples, clip.detail))
            if delay:
                time.sleep(delay)
    finally:
        os.close(fd)
    return results


def _check_free_space(partial: Path) -> None:
    """DataError when the disk cannot hold the rest of the (sparse) waveform file."""
    info = (partial / WAVEFORMS_FILE).stat()
    needed = max(0, info.st_size - getattr(info, "st_blocks", 0) * 512)
    free = shutil.disk_usage(partial).free
    if needed > free:
        raise DataError(
            f"cache folder {partial.parent}: not enough disk space: the waveform store needs "
            f"{needed / 1e9:.2f} GB more, {free / 1e9:.2f} GB free"
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
    """Decode every clip once into the fixed-length store ``cache_dir`` (see `datamodules.store`); return it.

    Returns at once when ``cache_dir`` already holds a complete store of the same inputs; resumes an
    interrupted preparation of the same inputs; rebuilds when the inputs changed. Emits one warning
    naming the skipped clips (path and status) when it builds a store.

    Args:
        audio_root: folder holding the ``0``..``f`` MP3 folders (`datamodules.datasets.mtat.reader.find_audio_root`).
        mp3_paths: per row, the MP3 path relative to ``audio_root``.
        clip_ids: per row, the clip id (recorded in the index).
        cache_dir: the store folder (created if needed).
        clip_samples: samples per clip.
        workers: decoding processes (default ``os.cpu_count()``; `infrastructure.workers.WorkerPool`); 1
            decodes in this process.
        progress: show a progress bar on stderr.
        chunk_rows: rows per unit of work and journal commit.

    Raises:
        ConfigError: inconsistent arguments.
        DataError: the folder is unwritable, the disk is too small, or writing failed. Work already done
            (and any previous complete store) is kept.
        Interrupted: Ctrl-C; the journal keeps the rows done.
    """
    if len(mp3_paths) != len(clip_ids):
        raise ConfigError(f"prepare_cache: {len(mp3_paths)} mp3 paths but {len(clip_ids)} clip ids")
    if not len(mp3_paths):
        raise ConfigError("prepare_cache: no clips to cache")
    for name, value in (("clip_samples", clip_samples), ("chunk_rows", chunk_rows)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"prepare_cache: {name} must be a positive integer, got {value!r}")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    clip_samples, chunk_rows = int(clip_samples), int(chunk_rows)
    audio_root, cache_dir = Path(audio_root), Path(cache_dir)
    mp3_paths = [str(p) for p in mp3_paths]
    n_rows = len(mp3_paths)
    digest = fingerprint(f"{clip_samples}|{SAMPLE_RATE}|{SAMPLE_DTYPE.str}",
                         ((int(clip_id), rel, audio_root / rel) for clip_id, rel in zip(clip_ids, mp3_paths)))

    def decode(journal: Journal) -> None:
        _check_free_space(journal.partial)
        chunks = [list(range(start, min(start + chunk_rows, n_rows))) for start in range(0, n_rows, chunk_rows)]
        chunks = [rows for rows in chunks if any(row not in journal.entries for row in rows)]
        waveforms = str(journal.partial / WAVEFORMS_FILE)
        tasks = ((str(audio_root), waveforms, clip_samples, rows, [mp3_paths[r] for r in rows]) for rows in chunks)
        with WorkerPool(workers if len(chunks) > 1 else 1) as pool:
            for results in pool.imap(_process_chunk, tasks, ordered=False):
                for row, status, decoded, detail in results:
                    journal.record(row, status, decoded, detail)
                journal.commit()  # one fsync covers every row finished so far, while the workers decode on

    def finish(entries: list[Entry]) -> dict:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(FIXED_INDEX_COLUMNS)
        for row, (clip_id, rel, entry) in enumerate(zip(clip_ids, mp3_paths, entries)):
            writer.writerow((row, int(clip_id), rel, entry.status, entry.samples))
        manifest = {"format_version": FORMAT_VERSION, "clip_samples": clip_samples, "sample_rate": SAMPLE_RATE,
                    "n_rows": n_rows, "n_ok": sum(entry.status == "ok" for entry in entries),
                    "dtype": SAMPLE_DTYPE.str, "fingerprint": digest}
        return {INDEX_FILE: text.getvalue().encode("utf-8"), MANIFEST_FILE: manifest}

    write_store(cache_dir, FIXED, digest, n_rows, decode=decode, finish=finish,
                presized_bytes=n_rows * clip_samples * SAMPLE_DTYPE.itemsize, progress=progress)
    return cache_dir


@dataclass(frozen=True)
class FixedSpec:
    """A dataset of clips of one length (MTAT): its store is a fixed-length one, named by the dataset folder."""

    clip_samples: int

    def folder(self, cache_root: Path, reader) -> Path:
        digest = hashlib.sha1(str(reader.data_dir).encode()).hexdigest()[:12]
        return cache_root / "waveforms" / f"{reader.data_dir.name}-{digest}"

    def write(self, folder: Path, clips, audio_root: Path, *, workers: int, progress: bool) -> None:
        prepare_cache(audio_root, clips.audio_paths, clips.clip_ids, folder, self.clip_samples, workers=workers,
                      progress=progress)

    def check_segments(self, segments) -> None:
        """A segment must fit in a clip (ConfigError otherwise)."""
        segments.check_fits(self.clip_samples)

    def check(self, store: WaveformStore) -> None:
        if not isinstance(store, FixedStore) or store.clip_samples != self.clip_samples:
            held = f"{store.clip_samples}-sample clips" if isinstance(store, FixedStore) else "tracks of any length"
            raise DataError(f"{store.folder}: the store holds {held}, the dataset {self.clip_samples}-sample clips; "
                            "delete the store folder to rebuild it")
