"""The ragged layout (MTG-Jamendo's tracks): tracks of any length, one after the other, plus their offsets.

MTAT's clips all last 29.1 s and make a rectangle (`datamodules.store.fixed`). MTG-Jamendo's tracks are
full length (mean 244 s, some over 20 min), so a rectangle would be mostly padding: this layout
concatenates the usable tracks and records where each starts (``offsets.npy``). At 16 kHz int16 the
whole of MTG-Jamendo (55,701 tracks x 244 s) is about 435 GB; with ``excerpt_samples`` (e.g. the middle
30 s, 480,000 samples) each track keeps only its middle part and the store is about 53 GB.

`write_ragged_store` is one pass in input order, bounded in memory whatever the number or length of the
tracks: the decoder (`datamodules.decoding.AudioDecoder.blocks` by default) yields a track in blocks and
each block goes to disk before the next is decoded. Rows are appended, so the journal holds a prefix of
them and a rerun continues with the next one (`datamodules.store.journal.write_store`); the waveform file
is made durable and journaled every ``commit_bytes`` of audio. `RaggedSpec` is what a dataset reader of
tracks of any length hands the data module.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.decoding import SAMPLE_DTYPE, AudioDecodeError, AudioDecoder
from datamodules.store.format import FORMAT_VERSION, INDEX_FILE, MANIFEST_FILE, OFFSETS_FILE, RAGGED, fingerprint
from datamodules.store.journal import Entry, Journal, npy_bytes, one_line, write_store
from datamodules.store.reader import RAGGED_INDEX_COLUMNS, RaggedStore, WaveformStore
from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError, DataError
from infrastructure.io import pwrite_all
from infrastructure.workers import WorkerPool

DEFAULT_COMMIT_BYTES = 64 << 20
"""Audio written between two commits (fsync + journal lines): the most a kill can lose."""

Decoder = Callable[[str], Iterable[np.ndarray]]
"""A decoder maps a path to int16 blocks (mono, the store's sample rate) or raises `AudioDecodeError`;
`RuntimeError`, `OSError` and `ValueError` count as ``decode_error``."""


def default_decoder(sample_rate: int = SAMPLE_RATE, excerpt_samples: int | None = None) -> Decoder:
    """The suite's decoder in blocks (`AudioDecoder.blocks`) at these settings, as a picklable one-argument decoder."""
    return functools.partial(AudioDecoder(sample_rate, strict=False).blocks, excerpt_samples=excerpt_samples)


def _write_failed(path: str, error: OSError) -> DataError:
    return DataError(f"ragged store: writing the samples of {path} failed ({type(error).__name__}: {error}); the "
                     "tracks written so far are kept and a rerun continues from there")


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
            block = np.ascontiguousarray(block, dtype=SAMPLE_DTYPE)
            if excerpt_samples is not None and written + len(block) > excerpt_samples:
                raise DataError(f"ragged store: the decoder returned more than excerpt_samples="
                                f"{excerpt_samples} samples for {path}")
            try:
                sink(block, written)
            except OSError as exc:
                raise _write_failed(path, exc) from exc
            written += len(block)
    except AudioDecodeError as exc:
        return exc.status, exc.detail, 0
    except DataError:
        raise
    except (RuntimeError, OSError, ValueError) as exc:
        return "decode_error", f"{type(exc).__name__}: {exc}", 0
    return ("ok", "", written) if written else ("empty", "no samples decoded", 0)


def _decode_whole(decoder: Decoder, path: str, excerpt_samples: int | None) -> tuple[str, str, np.ndarray]:
    """A worker's task: the whole track as one int16 array (empty unless its status is ok)."""
    parts: list[np.ndarray] = []
    status, detail, _ = _decode_into(decoder, path, excerpt_samples, lambda block, offset: parts.append(block))
    samples = np.concatenate(parts) if status == "ok" else np.zeros(0, SAMPLE_DTYPE)
    return status, detail, samples


def write_ragged_store(folder: str | Path, items: Sequence[tuple[str, str]], *,
                       decoder: Decoder | None = None, sample_rate: int = SAMPLE_RATE,
                       excerpt_samples: int | None = None, commit_bytes: int = DEFAULT_COMMIT_BYTES,
                       fingerprint_extra: str = "", workers: int = 1, progress: bool = False,
                       on_commit: Callable[[int], None] | None = None) -> RaggedStore:
    """Decode every ``(key, path)`` of ``items`` in order into the ragged store ``folder``; return it opened.
    A complete store with the same fingerprint is returned as it is; an interrupted one is resumed.

    Args:
        decoder: path -> int16 blocks (default: `default_decoder` at ``sample_rate`` with
            ``excerpt_samples``). A custom decoder must honour ``excerpt_samples`` itself; give
            its identity in ``fingerprint_extra`` so a change of decoder rebuilds the store.
        excerpt_samples: keep at most this many samples per track, the middle ones.
        commit_bytes: audio bytes between commits (the most a kill loses).
        workers: decoding processes. With more than one, each decodes whole tracks (int16 at the
            store's rate: about 1 MB per 30 s) while this process writes them in order; at most
            2 x workers tracks are in flight, so memory stays bounded by the longest tracks.
        progress: show a progress bar on stderr.
        on_commit: called with the number of committed rows after each commit (tests).

    Raises:
        ConfigError: bad options or duplicate keys.
        DataError: the folder cannot be written, or a decoder returned more than
            ``excerpt_samples`` samples.
        Interrupted: Ctrl-C; the journal keeps the tracks committed.
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
    digest = fingerprint(f"{sample_rate}|{excerpt_samples}|{SAMPLE_DTYPE.str}|{fingerprint_extra}",
                         ((key, path, path) for key, path in items))

    def decode(journal: Journal) -> None:
        position = sum(e.samples for e in journal.entries.values() if e.status == "ok") * SAMPLE_DTYPE.itemsize
        since_commit = 0

        def commit() -> None:
            nonlocal since_commit
            journal.commit()
            since_commit = 0
            if on_commit is not None:
                on_commit(journal.done)

        def record(row: int, status: str, detail: str, samples: int) -> None:
            nonlocal position, since_commit
            journal.record(row, status, samples, detail)
            position += samples * SAMPLE_DTYPE.itemsize
            since_commit += samples * SAMPLE_DTYPE.itemsize
            if since_commit >= commit_bytes:
                commit()

        rows = range(journal.done, len(items))
        if workers <= 1 or len(rows) < 2:
            for row in rows:
                start = position

                def sink(block: np.ndarray, offset: int) -> None:
                    pwrite_all(journal.waveforms, block, start + offset * SAMPLE_DTYPE.itemsize)

                record(row, *_decode_into(decoder, items[row][1], excerpt_samples, sink))
        else:
            with WorkerPool(workers) as pool:
                tasks = ((decoder, items[row][1], excerpt_samples) for row in rows)
                for row, (status, detail, samples) in zip(rows, pool.imap(_decode_whole, tasks, window=2 * workers)):
                    try:
                        pwrite_all(journal.waveforms, samples, position)
                    except OSError as exc:
                        raise _write_failed(items[row][1], exc) from exc
                    record(row, status, detail, len(samples))
        commit()
        os.ftruncate(journal.waveforms, position)  # drop the bytes of a failed last track

    def finish(entries: list[Entry]) -> dict:
        lengths = np.array([entry.samples if entry.status == "ok" else 0 for entry in entries], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        text = io.StringIO()
        writer = csv.writer(text, delimiter="\t", lineterminator="\n")
        writer.writerow(RAGGED_INDEX_COLUMNS)
        for row, ((key, path), entry) in enumerate(zip(items, entries)):
            writer.writerow([row, key, path, entry.status, entry.samples, one_line(entry.detail)])
        manifest = {"format_version": FORMAT_VERSION, "sample_rate": sample_rate, "n_tracks": len(entries),
                    "n_ok": sum(entry.status == "ok" for entry in entries), "total_samples": int(offsets[-1]),
                    "excerpt_samples": excerpt_samples, "dtype": SAMPLE_DTYPE.str, "fingerprint": digest}
        return {OFFSETS_FILE: npy_bytes(offsets), INDEX_FILE: text.getvalue().encode("utf-8"), MANIFEST_FILE: manifest}

    return write_store(folder, RAGGED, digest, len(items), decode=decode, finish=finish, progress=progress)


@dataclass(frozen=True)
class RaggedSpec:
    """A dataset of tracks of any length (MTG-Jamendo): its store is a ragged one, named by the dataset folder,
    ``name`` (what else sets the store's bytes: audio quality and excerpt) and the tracks it holds."""

    excerpt_samples: int | None
    name: str

    def folder(self, cache_root: Path, reader) -> Path:
        # Split sets of a subset that hold the same tracks share one store; other subsets or excerpts get their own.
        ids = np.asarray(reader.read().clip_ids, dtype=np.int64)
        key = f"{reader.data_dir}|{self.name}|".encode() + ids.tobytes()
        digest = hashlib.sha1(key).hexdigest()[:12]
        return cache_root / "tracks" / f"{reader.data_dir.name}-{self.name}-{digest}"

    def write(self, folder: Path, clips, audio_root: Path, *, workers: int, progress: bool) -> None:
        items = [(str(int(key)), str(audio_root / path)) for key, path in zip(clips.clip_ids, clips.audio_paths)]
        write_ragged_store(folder, items, excerpt_samples=self.excerpt_samples, workers=workers, progress=progress)

    def check_segments(self, segments) -> None:
        """Any segment length works: a chunk longer than a track is zero-padded."""

    def check(self, store: WaveformStore) -> None:
        if not isinstance(store, RaggedStore) or store.manifest.get("excerpt_samples") != self.excerpt_samples:
            raise DataError(f"{store.folder}: the store does not hold tracks kept as {self.name}; delete the store "
                            "folder to rebuild it")
