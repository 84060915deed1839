"""The record of a catalogue job: one binary record per file, appended and fsynced, read back up to its first torn one.

A catalogue (`tagging.catalogue`) may be killed at any moment (SIGKILL, a power loss, Ctrl-C): what
it has recorded must survive whole and what it was writing must not count. Each file's outcome is
one record, appended to `<output>.journal`:

    record = length (uint32 LE) + CRC-32 of the payload (uint32 LE) + payload
    payload = JSON length (uint32 LE) + JSON (path, size, mtime, status, ...) + probabilities float32[T]
              + embedding float32[D] (an ``ok`` record only)

after a file header (`MAGIC`). Records are appended a batch at a time and fsynced before the job
goes on, so a record on disk was complete when the job moved past it. Reading stops at the first
record that is short or whose CRC fails (a write cut by a kill) and truncates the file there, so
the next append continues a valid journal. A file is identified by its resolved path, size and
modification time: a file changed since it was recorded is tagged again (its newer record wins).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infrastructure.errors import DataError

MAGIC = b"mtat-tagging catalogue journal 1\n"
_HEAD = struct.Struct("<II")
_LEN = struct.Struct("<I")


@dataclass
class Record:
    """One file's outcome: its identity, what was read, and the model's output (``ok``) or the reason (``error``)."""

    meta: dict  # path, size, mtime_ns, status ("ok" | "error"), and duration_s, ... or status_detail, reason
    probs: np.ndarray | None = None  # (T,) float32, the segment average
    embedding: np.ndarray | None = None  # (D,) float32, the clip embedding

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.meta["path"], int(self.meta["size"]), int(self.meta["mtime_ns"]))

    @property
    def ok(self) -> bool:
        return self.meta["status"] == "ok"

    def encode(self) -> bytes:
        meta = json.dumps(self.meta, sort_keys=True, allow_nan=False).encode()
        parts = [_LEN.pack(len(meta)), meta]
        if self.ok:
            parts += [np.asarray(self.probs, "<f4").tobytes(), np.asarray(self.embedding, "<f4").tobytes()]
        payload = b"".join(parts)
        return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def file_key(path: Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime in ns): what identifies a file's content for resumption."""
    stat = path.stat()
    return str(path.resolve()), int(stat.st_size), int(stat.st_mtime_ns)


def read_journal(path: Path, n_tags: int, dim: int) -> dict[str, Record]:
    """The records of the journal at `path` by file path (the last one of a path wins), read up to the first torn
    record, where the file is truncated. An absent journal is empty.

    Raises:
        DataError: the file is not a catalogue journal.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):  # killed while writing the header
            path.write_bytes(b"")
            return {}
        raise DataError(f"{path}: not a catalogue journal; remove it (and the output beside it) to start afresh")
    records: dict[str, Record] = {}
    offset = len(MAGIC)
    vector = 4 * (n_tags + dim)
    while offset + _HEAD.size <= len(data):
        length, crc = _HEAD.unpack_from(data, offset)
        payload = data[offset + _HEAD.size:offset + _HEAD.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        (meta_length,) = _LEN.unpack_from(payload, 0)
        meta = json.loads(payload[_LEN.size:_LEN.size + meta_length])
        rest = payload[_LEN.size + meta_length:]
        record = Record(meta)
        if record.ok:
            if len(rest) != vector:
                raise DataError(f"{path}: a record of {len(rest) // 4} values where this model gives "
                                f"{n_tags} + {dim}; the journal belongs to another model")
            values = np.frombuffer(rest, dtype="<f4")
            record.probs, record.embedding = values[:n_tags].copy(), values[n_tags:].copy()
        records[meta["path"]] = record
        offset += _HEAD.size + length
    if offset != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(offset)
            handle.flush()
            os.fsync(handle.fileno())
    return records


class JournalWriter:
    """Appends records to a journal and makes them durable (`flush`)."""

    def __init__(self, path: Path):
        self.path = path
        fresh = not path.exists() or path.stat().st_size == 0
        self._handle = open(path, "ab")
        if fresh:
            self._handle.write(MAGIC)
            self.sync()
        self._pending: list[bytes] = []

    def add(self, record: Record) -> None:
        self._pending.append(record.encode())

    def flush(self) -> int:
        """Write and fsync the pending records; returns how many."""
        count = len(self._pending)
        if count:
            self._handle.write(b"".join(self._pending))
            self._pending.clear()
            self.sync()
        return count

    def sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self.flush()
        self._handle.close()
