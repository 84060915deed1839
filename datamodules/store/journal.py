"""Writing a waveform store, either layout: the partial folder, the journal, resumption and the final renames.

`write_store` is the one procedure both layouts follow (described in `datamodules.store`); a layout
brings only how it decodes its rows into the journal and what its index, offsets and manifest say
(`datamodules.store.fixed`, `datamodules.store.ragged`).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.decoding import SAMPLE_DTYPE
from datamodules.store.format import (
    INPUTS_FILE,
    JOURNAL_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    PARTIAL_DIR,
    STATUSES,
    WAVEFORMS_FILE,
    Layout,
    read_json,
    valid_manifest,
)
from datamodules.store.reader import WaveformStore, open_store
from infrastructure.errors import DataError, Interrupted
from infrastructure.io import file_lock, write_bytes_atomic, write_json_atomic
from infrastructure.workers import BrokenProcessPool

SHOWN_SKIPPED = 20
"""Skipped rows named in the warning after a store is written (the index lists them all)."""


@dataclass(frozen=True)
class Entry:
    """One finished row: its status, its samples (decoded: fixed; stored: ragged) and why it failed."""

    status: str
    samples: int
    detail: str = ""


def one_line(text: str) -> str:
    """``text`` on one line without tabs, so that journal and index stay parseable."""
    return " ".join(str(text).split())


def read_journal(path: Path, n_rows: int, in_order: bool) -> dict[int, Entry]:
    """The rows the journal ``path`` records, read up to its first line that is torn or wrong; the file is
    cut after the last good line. ``in_order``: the rows must be 0, 1, 2, ... (a ragged store appends them);
    otherwise any row may come, and come again (a fixed-length chunk redone after a kill), the last line winning.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    entries: dict[int, Entry] = {}
    keep = 0
    for line in data.split(b"\n")[:-1]:  # the part after the last newline is incomplete
        fields = line.decode("utf-8", "replace").split("\t", 3)
        try:
            row, status, samples = int(fields[0]), fields[1], int(fields[2])
        except (IndexError, ValueError):
            break
        if (status not in STATUSES or status == "pending" or samples < 0 or not 0 <= row < n_rows
                or (in_order and row != len(entries))):
            break
        entries[row] = Entry(status, samples, fields[3] if len(fields) > 3 else "")
        keep += len(line) + 1
    if keep != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(keep)
    return entries


def journal_from_progress_npy(partial: Path) -> None:
    """Compatibility: turn the ``progress.npy`` of a fixed-length preparation interrupted before the layouts
    shared the journal into ``journal.tsv`` lines, so that it resumes where it stopped.

    ``progress.npy`` held, per row, the status code (the position in `STATUSES`, 0 = pending) and the
    decoded length, replaced atomically after each chunk whose rows were on disk.
    """
    old = partial / "progress.npy"
    if not old.is_file() or (partial / JOURNAL_FILE).exists():
        return
    try:
        progress = np.load(old, allow_pickle=False)
    except (OSError, ValueError):
        progress = np.zeros((0, 2), dtype=np.int64)
    lines = [f"{row}\t{STATUSES[code]}\t{decoded}\t\n" for row, (code, decoded) in enumerate(progress.tolist())
             if 0 < code < len(STATUSES)] if progress.ndim == 2 and progress.shape[1:] == (2,) else []
    write_bytes_atomic(partial / JOURNAL_FILE, "".join(lines).encode())
    old.unlink()


class Journal:
    """``partial/``'s waveform file (open for writing) and its journal of finished rows.

    `record` notes a finished row; `commit` makes the waveform file durable, then appends the lines of
    the rows recorded since and makes them durable: the journal never names audio that is not on disk.
    `entries` holds the committed rows, `done` counts them; a progress bar follows the commits.
    """

    def __init__(self, partial: Path, entries: dict[int, Entry], n_rows: int, layout: Layout, progress: bool):
        from tqdm.auto import tqdm

        self.partial, self.entries, self.n_rows = partial, entries, n_rows
        self.waveforms = os.open(partial / WAVEFORMS_FILE, os.O_WRONLY)
        self._journal = os.open(partial / JOURNAL_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self._recorded: dict[int, Entry] = {}
        self._bar = tqdm(total=n_rows, initial=len(entries), unit=layout.unit.removesuffix("s"),
                         desc=f"decoding {layout.unit} -> {partial.parent.name}", file=sys.stderr, disable=not progress)

    @property
    def done(self) -> int:
        return len(self.entries)

    def record(self, row: int, status: str, samples: int, detail: str = "") -> None:
        self._recorded[row] = Entry(status, int(samples), one_line(detail))

    def commit(self) -> None:
        os.fsync(self.waveforms)
        if self._recorded:
            os.write(self._journal, "".join(f"{row}\t{e.status}\t{e.samples}\t{e.detail}\n"
                                            for row, e in self._recorded.items()).encode())
            os.fsync(self._journal)
            self.entries.update(self._recorded)
            self._recorded.clear()
            self._bar.update(self.done - self._bar.n)

    def close(self) -> None:
        self._bar.close()
        os.close(self.waveforms)
        os.close(self._journal)


def _open_journal(partial: Path, fingerprint: str, n_rows: int, layout: Layout, presized_bytes: int | None,
                  progress: bool) -> Journal:
    """The journal of ``partial/``, resumed when it belongs to ``fingerprint``, else started afresh.

    Resuming keeps the committed rows: a ragged store's waveform file is cut to the samples they account
    for (anything written after the last commit is dropped); a fixed-length one must still have its size.
    """
    inputs = read_json(partial / INPUTS_FILE)
    waveforms = partial / WAVEFORMS_FILE
    if isinstance(inputs, dict) and inputs.get("fingerprint") == fingerprint and waveforms.is_file():
        journal_from_progress_npy(partial)
        entries = read_journal(partial / JOURNAL_FILE, n_rows, in_order=layout.appends)
        size = waveforms.stat().st_size
        if layout.appends:
            committed = sum(e.samples for e in entries.values() if e.status == "ok") * SAMPLE_DTYPE.itemsize
            if size >= committed:
                os.truncate(waveforms, committed)
                return Journal(partial, entries, n_rows, layout, progress)
        elif size == presized_bytes:
            return Journal(partial, entries, n_rows, layout, progress)
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    with open(waveforms, "wb") as handle:  # pre-sized: sparse, blocks are allocated as rows are written
        handle.truncate(presized_bytes or 0)
    (partial / JOURNAL_FILE).touch()
    write_json_atomic(partial / INPUTS_FILE, {"fingerprint": fingerprint, "n_rows": n_rows}, sort_keys=True)
    return Journal(partial, {}, n_rows, layout, progress)


def _ensure_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise DataError(f"cache folder {folder} is not writable: {exc.strerror or exc}") from exc


def _move_into_place(partial: Path, folder: Path, layout: Layout) -> None:
    """Rename the finished files from ``partial/`` into ``folder`` (manifest last), idempotently.

    The old store's manifest is removed first, so no moment exists where a manifest describes a mix of
    old and new files. Resumable: files already moved are skipped.
    """
    (folder / MANIFEST_FILE).unlink(missing_ok=True)
    for name in layout.files:
        if (partial / name).exists():
            os.replace(partial / name, folder / name)
    shutil.rmtree(partial)


def warn_skipped(store: WaveformStore) -> None:
    """One warning naming the rows the store skipped (the first `SHOWN_SKIPPED`; its index lists them all)."""
    skipped = store.skipped()
    if not skipped:
        return
    shown = "; ".join(f"{name} ({status}: {detail})" if detail else f"{name} ({status})"
                      for name, status, detail in skipped[:SHOWN_SKIPPED])
    more = f"; and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
    warnings.warn(f"waveform store {store.folder}: {len(skipped)} of {len(store)} {store.layout.unit} skipped, "
                  f"listed in {store.index_path}: {shown}{more}", stacklevel=4)


def write_store(folder: Path, layout: Layout, fingerprint: str, n_rows: int, *,
                decode: Callable[[Journal], None], finish: Callable[[list[Entry]], dict[str, bytes | dict]],
                presized_bytes: int | None = None, progress: bool = False) -> WaveformStore:
    """Write the store ``folder`` of ``n_rows`` rows, or reuse it; return it opened.

    A complete store with this ``fingerprint`` is returned as it is. Otherwise the work happens in
    ``folder/partial/`` under ``folder/.lock``: ``decode(journal)`` decodes every row the journal does not
    hold (resuming an interrupted run of the same inputs), ``finish(entries)`` gives the files to write
    besides ``waveforms.int16`` (name -> bytes, the manifest as a dict, written last), and the files are
    renamed into ``folder``. Ctrl-C raises `Interrupted` saying what the journal keeps.

    Raises:
        DataError: the folder cannot be written, writing failed, or a decoding worker died (the work done so
            far is kept and a rerun continues from there).
    """
    _ensure_writable(folder)
    partial = folder / PARTIAL_DIR
    journal: Journal | None = None
    try:
        with file_lock(folder / LOCK_FILE):
            if valid_manifest(folder, fingerprint) is not None:
                inputs = read_json(partial / INPUTS_FILE)
                if isinstance(inputs, dict) and inputs.get("fingerprint") == fingerprint:
                    shutil.rmtree(partial, ignore_errors=True)  # leftover of a finished run
                return open_store(folder)
            if valid_manifest(partial, fingerprint) is None:  # otherwise only the renames remain
                journal = _open_journal(partial, fingerprint, n_rows, layout, presized_bytes, progress)
                try:
                    decode(journal)
                    journal.commit()
                finally:
                    journal.close()
                if journal.done != n_rows:
                    raise RuntimeError(f"{folder}: {n_rows - journal.done} rows left undecoded")  # a bug
                files = finish([journal.entries[row] for row in range(n_rows)])
                for name, content in files.items():
                    if name != MANIFEST_FILE:
                        write_bytes_atomic(partial / name, content)
                write_json_atomic(partial / MANIFEST_FILE, files[MANIFEST_FILE], sort_keys=True)
            _move_into_place(partial, folder, layout)
    except KeyboardInterrupt as stop:  # counted on disk: Ctrl-C may have come between a commit's write and its end
        done = len(read_journal(partial / JOURNAL_FILE, n_rows, layout.appends)) if journal is not None else 0
        raise Interrupted(f"decoding: {done} of {n_rows} {layout.unit} are in the store's journal at "
                          f"{partial / JOURNAL_FILE} (kept); rerun the same command to continue decoding") from stop
    except BrokenProcessPool as exc:
        raise DataError(f"cache folder {folder}: a decoding worker process died ({exc}; killed, or out of memory?); "
                        "the work done so far is kept and a rerun continues from there") from exc
    except OSError as exc:
        raise DataError(f"cache folder {folder}: writing the waveform store failed ({exc}); "
                        "the work done so far is kept and a rerun continues from there") from exc
    store = open_store(folder)
    warn_skipped(store)
    return store


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
