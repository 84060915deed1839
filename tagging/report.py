"""`run.py --tag PATH... --checkpoint RUN` without `--out`: a report per file on stdout (text, or one JSON document).

Per file: the tags whose probability reaches their stored threshold, and the top-k; a tag whose
threshold fell back to 0.5 (validation had too few positives to choose one) is marked `*` with a
footnote, and `?` where the checkpoint predates that record (`--json`: ``threshold_fell_back`` true
/ null). A file that decoded slightly short (within the tolerated shortfall, `tagging.reading`) is
tagged, with a note saying how much was missing. With `--taggram`, the taggram of each file is
drawn (`tagging.taggram`); the report is unchanged by it.

Broken inputs never stop a batch of files: a missing, empty, non-audio, corrupt or truncated file is
reported with the reason and skipped; `run_tagging` returns 1 when any file failed. For thousands
of files, `--out` tags a catalogue in parallel, resumably (`tagging.catalogue`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from infrastructure.errors import ConfigError
from tagging.files import find_audio_files
from tagging.tagger import DEFAULT_TOP_K, AudioError, Tagger, TagResult
from tagging.taggram import DEFAULT_TAGGRAM_HOP_S, check_hop

FELL_BACK_MARK, UNKNOWN_MARK = "*", "?"
FELL_BACK_NOTE = "* threshold fell back to 0.5: too few validation positives to choose one"
UNKNOWN_NOTE = ("? threshold 0.5 may have fallen back: the checkpoint was saved before fallbacks were recorded "
                "(retrain or re-validate it to know)")


def format_text(result: TagResult) -> str:
    """The human-readable report of one file."""
    channels = {1: "mono", 2: "stereo"}.get(result.channels, f"{result.channels} channels")
    where = f" from {result.start_s:g} s" if result.start_s else ""
    count = len(result.segment_starts_s)
    head = (f"{result.path}  ({result.audio_seconds:.1f} s{where}, {result.source_rate} Hz {channels}, "
            f"{count} segment{'s' if count != 1 else ''})")
    marks = {t: FELL_BACK_MARK if state else UNKNOWN_MARK for t, state in (result.fell_back or {}).items()
             if state is not False}
    tags = ", ".join(f"{t.tag} ({t.score:.2f}{marks.get(t.tag, '')})" for t in result.tags) or \
        "(none above its threshold)"
    top = ", ".join(f"{t.tag} {t.score:.3f}{marks.get(t.tag, '')}" for t in result.top)
    lines = [head, f"  tags:  {tags}", f"  top {len(result.top)}: {top}"]
    if result.shortfall_s:
        lines.append(f"  note: the file delivered {result.shortfall_s:.2f} s less than it declares; tagged what "
                     "decodes (the missing end as silence)")
    shown = {t.tag for t in result.tags} | {t.tag for t in result.top}
    for mark, note in ((FELL_BACK_MARK, FELL_BACK_NOTE), (UNKNOWN_MARK, UNKNOWN_NOTE)):
        if any(marks.get(t) == mark for t in shown):
            lines.append(f"  {note}")
    return "\n".join(lines)


def taggram_paths(target: Path, files: Sequence[Path]) -> dict[Path, Path]:
    """Where each file's taggram goes: `target` itself for one file and a .png target, else one PNG per file."""
    if len(files) == 1 and target.suffix.lower() == ".png":
        return {files[0]: target}
    folder = target.with_suffix("") if target.suffix.lower() == ".png" else target
    out: dict[Path, Path] = {}
    used: set[str] = set()
    for file in files:
        name = f"{file.name}.taggram.png"
        k = 1
        while name in used:
            k += 1
            name = f"{file.name}-{k}.taggram.png"
        used.add(name)
        out[file] = folder / name
    return out


def write_taggram(result: TagResult, tags: Sequence[str], path: Path) -> Path:
    """The file's taggram (`tagging.taggram`) as a PNG at `path`."""
    from tagging.taggram import write_taggram_png

    return write_taggram_png(result.taggram, tags, result.probs, result.thresholds, Path(result.path).name, path,
                             fell_back=result.fell_back)


def run_tagging(paths: Sequence[str | Path], checkpoint: str | Path, *, top_k: int = DEFAULT_TOP_K,
                json_output: bool = False, taggram: str | Path | None = None, start_s: float | None = None,
                duration_s: float | None = None, accelerator: str = "auto", progress: bool = True,
                out: TextIO | None = None, err: TextIO | None = None, model: str | None = None,
                taggram_hop_s: float | None = None, batch_size: int | None = None) -> int:
    """Tag files and folders; print a report per file (or one JSON document). Returns 0, or 1 if any input failed.

    `model`, when given (run.py's --model), must name the checkpoint's network. `taggram_hop_s`
    (--taggram-hop, default 3 s) goes with `taggram` only.

    Raises:
        SuiteError: for problems with the command itself (unreadable checkpoint, bad options).
    """
    from tqdm import tqdm

    out = out or sys.stdout
    err = err or sys.stderr
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    start_s = 0.0 if start_s is None else float(start_s)
    if start_s < 0 or (duration_s is not None and duration_s <= 0):
        raise ConfigError("--start must be >= 0 and --duration > 0 seconds")
    if taggram_hop_s is not None and not taggram:
        raise ConfigError("--taggram-hop goes with --taggram PNG|DIR")
    if taggram:
        taggram_hop_s = DEFAULT_TAGGRAM_HOP_S if taggram_hop_s is None else taggram_hop_s
    tagger = load_tagger(checkpoint, accelerator, model, batch_size)
    if taggram:
        check_hop(taggram_hop_s, tagger.sample_rate)  # before any file: a bad hop is one error, not one per file
    inputs = find_audio_files(paths)
    failures = list(inputs.failures)
    results: list[TagResult] = []
    taggrams = taggram_paths(Path(taggram).expanduser().resolve(), inputs.files) if taggram else {}
    bar = tqdm(inputs.files, desc="tagging", unit="file", file=err,
               disable=True if not progress or len(inputs.files) < 2 else None, dynamic_ncols=True)
    for file in bar:
        try:
            result = tagger.tag(file, start_s=start_s, duration_s=duration_s, top_k=top_k)
            if file in taggrams:
                result.taggram = tagger.taggram(file, hop_s=taggram_hop_s, start_s=start_s, duration_s=duration_s)
        except AudioError as error:
            failures.append((str(file), str(error).removeprefix(f"{file}: ")))
            bar.write(f"skipped {file}: {str(error).removeprefix(f'{file}: ')}", file=err)
            continue
        results.append(result)
        if file in taggrams:
            write_taggram(result, tagger.tags, taggrams[file])
        if not json_output:
            bar.write(format_text(result), file=out)
    bar.close()
    if json_output:
        document = {
            "checkpoint": tagger.source, "tags": tagger.tags,
            "thresholds": [round(float(t), 6) for t in tagger.thresholds],
            "threshold_fell_back": tagger.fell_back,
            "files": [r.to_dict(tagger.tags) for r in results],
            "failed": [{"path": p, "error": e} for p, e in failures],
            "ignored": [str(p) for p in inputs.ignored],
        }
        for entry, result in zip(document["files"], results):
            if Path(result.path) in taggrams:
                entry["taggram"] = str(taggrams[Path(result.path)])
                entry["taggram_windows"] = result.taggram.to_dict(tagger.tags)
        out.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
    else:
        tagged = {Path(r.path): r for r in results}
        for file in taggrams:
            if file in tagged:
                print(f"taggram: {taggrams[file]} ({tagged[file].taggram.describe()})", file=out)
        if inputs.ignored:
            print(f"ignored {len(inputs.ignored)} file(s) without an audio suffix in the folders given", file=err)
    if failures:
        print(f"{len(failures)} of {len(inputs.files) + len(inputs.failures)} input(s) failed:", file=err)
        for path, reason in failures:
            print(f"  {path}: {reason}", file=err)
        return 1
    return 0


def load_tagger(checkpoint: str | Path, accelerator: str = "auto", model: str | None = None,
                batch_size: int | None = None) -> Tagger:
    """The `Tagger` of --checkpoint: a .ckpt, a run folder, or a folder of `--export` (its config.json).

    `model` (run.py's --model), when given, must name its network.
    """
    from tagging.export import is_exported
    from tagging.tagger import DEFAULT_BATCH_SIZE

    kwargs = {"device": accelerator, "batch_size": batch_size or DEFAULT_BATCH_SIZE}
    tagger = (Tagger.from_pretrained(checkpoint, **kwargs) if is_exported(checkpoint)
              else Tagger.from_checkpoint(checkpoint, **kwargs))
    if model and model != tagger.model_name:
        raise ConfigError(f"--model {model} does not match the checkpoint's network ({tagger.model_name}): "
                          f"{tagger.source}")
    return tagger
