"""Reading back what a W&B offline run wrote.

wandb ships no reader for its `.wandb` files; this small one follows the documented LevelDB-log layout and decodes
the records with wandb's own protobufs, so the tests can check the history, config and summary a run logged.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path


def _records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += room
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # full, first
            pending = chunk
        else:  # middle, last
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _put(target: dict, item) -> None:
    keys = list(item.nested_key) or [item.key]
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = json.loads(item.value_json)


def _complete_records(path: Path, timeout_s: float = 60.0) -> list:
    """The file's records once its `exit` record is written: `finish()` returns before wandb's
    service process has written everything to the file."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = list(_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def read_offline_run(folder: Path) -> dict:
    """History rows, config and summary of one offline-run-* folder."""
    (wandb_file,) = folder.glob("run-*.wandb")
    history, config, summary = [], {}, {}
    for record in _complete_records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {}
            for item in record.history.item:
                _put(row, item)
            history.append(row)
        elif kind == "config":
            for item in record.config.update:
                _put(config, item)
        elif kind == "run":
            for item in record.run.config.update:
                _put(config, item)
        elif kind == "summary":
            for item in record.summary.update:
                _put(summary, item)
    return {"history": history, "config": config, "summary": summary}


def values(history: list[dict], key: str) -> list:
    return [row[key] for row in history if key in row]
