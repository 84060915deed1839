"""Tag a catalogue: `run.py --tag DIR... --checkpoint RUN --out tags.csv [--embeddings emb.npy]`.

Fast: worker processes (`infrastructure.workers.WorkerPool`, `--prepare-workers`, default `default_workers`)
decode the files piece by piece (`tagging.reading`: at most `PIECE_SECONDS` of audio each, so memory
stays bounded whatever the files' lengths) and feed batched inference in this process, on the
device; at most two pieces per worker wait at any time. A progress bar on stderr shows files/s and
the time left.

Resumable: each file's outcome goes to `<out>.journal` (`tagging.journal`), appended and fsynced
after every batch, and the output is written from the journal, atomically, once every file is done.
A killed job rerun with the same command skips every file recorded with the same path, size and
modification time: no file is tagged twice, no row is lost or half-written. Ctrl-C ends the job at
once, saying what is kept. `<out>.model.json` records the model's identity (`Tagger.identity`): an
output made with another model is refused in one line, never mixed in; so is an existing file that
this command did not write.

Broken files never stop the job: a missing, undecodable, empty, truncated or non-audio file goes to
`<out stem>.errors.csv` beside the output, with its reason, and is counted in the closing line. A
file that delivers slightly less than it declares is tagged (`shortfall_s` says how much was missing).

Outputs, by `--out`'s suffix, one row per file, ordered by path: `.csv` (tags and top-k joined
with "; "), `.jsonl` and `.parquet` (lists; needs pyarrow). Columns: path, duration_s,
source_sample_rate, channels, segments, shortfall_s, tags (above their thresholds, highest
first), top (the top-k), then one column per tag with its probability. `--embeddings PATH.npy`
writes the clip embeddings as a float32 (files, D) array whose row i is the output's row i
(`numpy.load`); `PATH.parquet` a table with a path column and e0...e{D-1} (`pandas.read_parquet`);
either with `PATH.json` beside it (the model's identity and the rows' paths, what `--similar` reads).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from infrastructure.errors import ConfigError, DataError, Interrupted
from infrastructure.io import atomic_path, try_file_lock, write_json_atomic, write_text_atomic
from tagging.journal import JournalWriter, Record, file_key, read_journal

OUTPUT_FORMATS = (".csv", ".jsonl", ".parquet")
EMBEDDING_FORMATS = (".npy", ".parquet")
FIXED_COLUMNS = ("path", "duration_s", "source_sample_rate", "channels", "segments", "shortfall_s", "tags", "top")
TAG_SEPARATOR = "; "


def sidecar_of(out: Path) -> Path:
    return out.with_name(out.name + ".model.json")


def journal_of(out: Path) -> Path:
    return out.with_name(out.name + ".journal")


def errors_of(out: Path) -> Path:
    return out.with_name(out.stem + ".errors.csv")


def embeddings_index_of(path: Path) -> Path:
    return path.with_name(path.name + ".json")


# ---- worker side -----------------------------------------------------------------------------------------------
def decode_piece(path: str, sample_rate: int, segment_samples: int, start_s: float, duration_s: float | None,
                 piece: int, plan) -> tuple:
    """One piece of one file, in a worker process: ("ok", plan, piece, first segment index, segments, decoded_end)
    or ("error", status, reason). The first piece (plan None) plans the file."""
    from datamodules.decoding import AudioDecodeError
    from tagging.reading import plan_file, read_piece, tagging_decoder

    decoder = tagging_decoder(sample_rate)
    try:
        if plan is None:
            plan = plan_file(decoder, path, segment_samples, start_s=start_s, duration_s=duration_s)
        segments, end = read_piece(decoder, plan, piece)
    except AudioDecodeError as error:
        return ("error", error.status, error.detail)
    return ("ok", plan, piece, plan.pieces[piece][0], segments, end)


class _Feed:
    """Task arguments that grow as results come in (a file's later pieces); see `WorkerPool.imap`."""

    def __init__(self):
        self.items: deque = deque()

    def __iter__(self):
        return self

    def __next__(self):
        if not self.items:
            raise StopIteration
        return self.items.popleft()


# ---- checks before any tagging -----------------------------------------------------------------------------------
def check_output(out: str | Path, embeddings: str | Path | None) -> tuple[Path, Path | None]:
    """The resolved output paths, after checking their formats and that their folders can be written."""
    out = Path(out).expanduser().resolve()
    if out.suffix.lower() not in OUTPUT_FORMATS:
        raise ConfigError(f"--out {out.name}: the catalogue is written as {', '.join(OUTPUT_FORMATS)} (by its suffix)")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give the catalogue's file name, e.g. {out / 'tags.csv'}")
    paths = [out]
    if embeddings is not None:
        embeddings = Path(embeddings).expanduser().resolve()
        if embeddings.suffix.lower() not in EMBEDDING_FORMATS:
            raise ConfigError(f"--embeddings {embeddings.name}: written as {' or '.join(EMBEDDING_FORMATS)} "
                              "(numpy.load or pandas.read_parquet)")
        paths.append(embeddings)
    if any(p.suffix.lower() == ".parquet" for p in paths) and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError("writing .parquet needs pyarrow: pip install -e '.[parquet]' (or write .csv / .jsonl / .npy)")
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            probe = path.with_name(f".{path.name}.write-test")
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise ConfigError(f"cannot write {path}: {error.strerror or error}") from None
    return out, embeddings


def model_record(tagger) -> dict:
    return {"identity": tagger.identity, "model": tagger.model_name, "source": tagger.source, "tags": tagger.tags,
            "embedding_dim": tagger.embedding_dim, "sample_rate": tagger.sample_rate,
            "segment_samples": tagger.segment_samples}


def check_same_model(out: Path, tagger) -> None:
    """Refuse an output (or journal) made with another model, or a file this command did not write."""
    sidecar = sidecar_of(out)
    if sidecar.is_file():
        try:
            saved = json.loads(sidecar.read_text())
        except ValueError:
            raise DataError(f"{sidecar}: unreadable; remove it with {out.name} and its journal to start afresh") from None
        if saved.get("identity") != tagger.identity:
            raise ConfigError(f"{out} was made with another model ({saved.get('model')}, identity "
                              f"{saved.get('identity')}, from {saved.get('source')}); this one is {tagger.model_name} "
                              f"{tagger.identity}: give another --out, or delete {out.name} and "
                              f"{journal_of(out).name} to start afresh")
        return
    if out.exists() or journal_of(out).exists():
        raise ConfigError(f"{out} exists and was not written by --tag --out (no {sidecar.name} beside it): give "
                          "another --out, or remove it")
    write_json_atomic(sidecar, model_record(tagger))


# ---- the job -------------------------------------------------------------------------------------------------
class _FileState:
    __slots__ = ("meta", "plan", "probs", "embeddings", "filled", "ends")

    def __init__(self, meta: dict):
        self.meta, self.plan, self.probs, self.embeddings, self.filled, self.ends = meta, None, None, None, 0, []


def run_catalogue(paths: Sequence[str | Path], checkpoint: str | Path, out: str | Path, *,
                  embeddings: str | Path | None = None, top_k: int = 5, workers: int | None = None,
                  accelerator: str = "auto", batch_size: int | None = None, progress: bool = True,
                  model: str | None = None, start_s: float | None = None, duration_s: float | None = None) -> int:
    """Tag every audio file under `paths` into `out` (see the module docstring). Returns 0, or 1 if any file failed.

    Raises:
        SuiteError: the command cannot run (bad output, another model's output, unreadable checkpoint).
        Interrupted: Ctrl-C; what is recorded is kept.
    """
    from tagging.files import find_audio_files
    from tagging.report import load_tagger

    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    out, embeddings = check_output(out, embeddings)
    tagger = load_tagger(checkpoint, accelerator, model, batch_size)
    clash = sorted(set(tagger.tags) & set(FIXED_COLUMNS))
    if clash:
        raise ConfigError(f"the model's tags {clash} are named like the catalogue's own columns")
    lock = try_file_lock(out.with_name(f".{out.name}.lock"))
    if lock is None:
        raise ConfigError(f"another --tag job is writing {out}; wait for it, or give another --out")
    try:
        check_same_model(out, tagger)
        journal = journal_of(out)
        records = read_journal(journal, len(tagger.tags), tagger.embedding_dim)
        inputs = find_audio_files(paths)
        todo, skipped = [], 0
        for file in inputs.files:
            try:
                key = file_key(file)
            except OSError as error:
                records[str(file.resolve())] = Record({"path": str(file.resolve()), "size": 0, "mtime_ns": 0,
                                                       "status": "error", "decode_status": "missing",
                                                       "reason": error.strerror or str(error)})
                continue
            known = records.get(key[0])
            if known is not None and known.key == key:
                skipped += 1
            else:
                todo.append(key)
        for given, reason in inputs.failures:
            records[str(Path(given).expanduser().resolve())] = Record(
                {"path": str(Path(given).expanduser().resolve()), "size": 0, "mtime_ns": 0, "status": "error",
                 "decode_status": "missing", "reason": reason})
        started = time.perf_counter()
        writer = JournalWriter(journal)
        try:
            done = _tag_files(tagger, todo, writer, records, workers=workers, progress=progress,
                              start_s=start_s or 0.0, duration_s=duration_s)
        except KeyboardInterrupt:
            kept = writer.flush()
            raise Interrupted(f"{len(records)} file(s) are recorded in {journal} "
                              f"({kept} in the last moment); {out.name} is not written yet: rerun the same command "
                              "to continue") from None
        finally:
            writer.close()
        seconds = time.perf_counter() - started
        tagged, failed = write_outputs(out, embeddings, tagger, records, top_k)
    finally:
        lock.release()
    rate = f", {done / seconds:.1f} files/s" if done and seconds > 0 else ""
    print(f"{tagged} file(s) tagged into {out} ({done} now, {skipped} recorded before{rate}); "
          f"{failed} error(s)" + (f" listed in {errors_of(out)}" if failed else ""), file=sys.stderr)
    if embeddings is not None:
        print(f"clip embeddings: {embeddings} (rows as in {out.name})", file=sys.stderr)
    return 1 if failed else 0


def _tag_files(tagger, todo: list[tuple[str, int, int]], writer: JournalWriter, records: dict, *,
               workers: int | None, progress: bool, start_s: float, duration_s: float | None) -> int:
    """Decode `todo` in worker processes, infer in batches here, record each file as it completes."""
    from tqdm import tqdm

    from datamodules.decoding import AudioDecodeError
    from infrastructure.workers import WorkerPool
    from tagging.reading import tagging_decoder

    if not todo:
        return 0
    n_workers = max(1, min(workers or default_workers(tagger.device.type), len(todo)))
    feed = _Feed()
    states: dict[int, _FileState] = {}
    for fid, (path, size, mtime) in enumerate(todo):
        states[fid] = _FileState({"path": path, "size": size, "mtime_ns": mtime})
        feed.items.append((path, tagger.sample_rate, tagger.segment_samples, start_s, duration_s, 0, None, fid))
    decoder = tagging_decoder(tagger.sample_rate)
    buffer: deque = deque()  # (fid, first segment index, segments)
    buffered = 0
    completed = 0
    bar = tqdm(total=len(todo), unit="file", desc="tagging", file=sys.stderr, dynamic_ncols=True,
               disable=True if not progress else None, smoothing=0.1)  # None: a bar on a terminal only

    def finish(fid: int, state: _FileState, record: Record) -> None:
        nonlocal completed
        records[record.meta["path"]] = record
        writer.add(record)
        del states[fid]
        completed += 1
        bar.update(1)

    def complete(fid: int) -> None:
        state = states[fid]
        plan = state.plan
        try:
            shortfall = decoder.finish(plan.audio, min(state.ends) if state.ends else None)
        except AudioDecodeError as error:
            finish(fid, state, Record({**state.meta, "status": "error", "decode_status": error.status,
                                       "reason": error.detail}))
            return
        meta = {**state.meta, "status": "ok", "duration_s": round(plan.audio.seconds, 3),
                "source_sample_rate": plan.audio.source_rate, "channels": plan.audio.channels,
                "segments": plan.segments, "shortfall_s": round(shortfall / plan.audio.source_rate, 3)}
        finish(fid, state, Record(meta, state.probs.mean(axis=0).astype(np.float32),
                                  state.embeddings.mean(axis=0).astype(np.float32)))

    def infer(limit: int) -> None:
        """Run batches while at least `limit` segments wait (limit 1: everything left)."""
        nonlocal buffered
        while buffered >= limit and buffered:
            take, parts = tagger.batch_size, []
            while take and buffer:
                fid, first, segments = buffer[0]
                part = segments[:take]
                parts.append((fid, first, len(part)))
                if len(part) == len(segments):
                    buffer.popleft()
                else:
                    buffer[0] = (fid, first + len(part), segments[len(part):])
                take -= len(part)
                parts_arrays.append(part)
            batch = np.concatenate(parts_arrays) if len(parts_arrays) > 1 else parts_arrays[0]
            parts_arrays.clear()
            buffered -= len(batch)
            probs, embeddings = tagger.infer(batch)
            offset = 0
            for fid, first, count in parts:
                state = states[fid]
                state.probs[first:first + count] = probs[offset:offset + count]
                state.embeddings[first:first + count] = embeddings[offset:offset + count]
                state.filled += count
                offset += count
                if state.filled == state.plan.segments:
                    complete(fid)
            writer.flush()

    parts_arrays: list[np.ndarray] = []
    with WorkerPool(n_workers) as pool:
        for result in pool.imap(_decode_task, feed, ordered=False, window=2 * n_workers):
            fid, outcome = result
            state = states[fid]
            if outcome[0] == "error":
                finish(fid, state, Record({**state.meta, "status": "error", "decode_status": outcome[1],
                                           "reason": outcome[2]}))
                writer.flush()
                continue
            _, plan, piece, first, segments, end = outcome
            if state.plan is None:
                state.plan = plan
                state.probs = np.zeros((plan.segments, len(tagger.tags)))
                state.embeddings = np.zeros((plan.segments, tagger.embedding_dim), dtype=np.float32)
                for later in range(1, len(plan.pieces)):
                    feed.items.append((state.meta["path"], tagger.sample_rate, tagger.segment_samples, start_s,
                                       duration_s, later, plan, fid))
            if end is not None:
                state.ends.append(end)
            buffer.append((fid, first, segments))
            buffered += len(segments)
            infer(tagger.batch_size)
        infer(1)
    bar.close()
    return completed


def _decode_task(path, sample_rate, segment_samples, start_s, duration_s, piece, plan, fid):
    return fid, decode_piece(path, sample_rate, segment_samples, start_s, duration_s, piece, plan)


def default_workers(device: str) -> int:
    """Decoding processes when --prepare-workers is not given: every core on a GPU machine; on the CPU one core is
    left to the network, whose threads a decoder on every core would slow (an LSTM many times over)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return cores if device == "cuda" else max(1, cores - 1)


# ---- outputs ---------------------------------------------------------------------------------------------------
def write_outputs(out: Path, embeddings: Path | None, tagger, records: dict, top_k: int) -> tuple[int, int]:
    """Write the catalogue, its errors file and the embeddings from the records, atomically; (rows, errors)."""
    ok = sorted((r for r in records.values() if r.ok), key=lambda r: r.meta["path"])
    errors = sorted((r for r in records.values() if not r.ok), key=lambda r: r.meta["path"])
    rows = [catalogue_row(tagger, record, top_k) for record in ok]
    suffix = out.suffix.lower()
    if suffix == ".csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow([*FIXED_COLUMNS, *tagger.tags])
        for row in rows:
            writer.writerow([TAG_SEPARATOR.join(row[c]) if c in ("tags", "top") else row[c]
                             for c in FIXED_COLUMNS] + [row[t] for t in tagger.tags])
        write_text_atomic(out, text.getvalue())
    elif suffix == ".jsonl":
        write_text_atomic(out, "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))
    else:
        import pandas as pd

        frame = pd.DataFrame(rows, columns=[*FIXED_COLUMNS, *tagger.tags])
        with atomic_path(out) as tmp:
            frame.to_parquet(tmp, index=False)
    error_text = io.StringIO()
    writer = csv.writer(error_text, lineterminator="\n")
    writer.writerow(["path", "status", "reason"])
    for record in errors:
        writer.writerow([record.meta["path"], record.meta.get("decode_status", ""), record.meta.get("reason", "")])
    if errors or errors_of(out).exists():
        write_text_atomic(errors_of(out), error_text.getvalue())
    if embeddings is not None:
        matrix = (np.stack([r.embedding for r in ok]) if ok
                  else np.zeros((0, tagger.embedding_dim), np.float32)).astype(np.float32)
        write_embeddings(embeddings, matrix, [r.meta["path"] for r in ok], tagger)
    return len(ok), len(errors)


def catalogue_row(tagger, record: Record, top_k: int) -> dict:
    probs = record.probs.astype(np.float64)
    above, top = tagger.ranked(probs, top_k)
    row = {key: record.meta.get(key) for key in FIXED_COLUMNS[:-2]}
    row["tags"] = [s.tag for s in above]
    row["top"] = [s.tag for s in top]
    row.update({tag: round(float(p), 6) for tag, p in zip(tagger.tags, probs)})
    return row


def write_embeddings(path: Path, matrix: np.ndarray, paths: list[str], tagger) -> None:
    """`matrix` (files, D) as .npy or .parquet at `path`, with `path`.json (the model and the rows' paths)."""
    if path.suffix.lower() == ".npy":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, matrix)
    else:
        import pandas as pd

        frame = pd.DataFrame(matrix, columns=[f"e{i}" for i in range(matrix.shape[1])])
        frame.insert(0, "path", paths)
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp, index=False)
    write_json_atomic(embeddings_index_of(path), {**model_record(tagger), "rows": len(paths), "paths": paths})
