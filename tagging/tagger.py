"""Tag your own music with a trained checkpoint (`python run.py --tag PATH... --checkpoint CKPT`).

The checkpoint carries everything needed (network config, tag list, Mel settings, segment layout
and the per-tag thresholds chosen on validation), so no dataset is involved:

1. decode the file with soundfile (MP3, WAV, FLAC, OGG/Vorbis/Opus, AIFF, ...), optionally only
   `start_s`/`duration_s` of it; mix the channels down to mono; resample to the model's rate
   (16 kHz) with `torchaudio.functional.resample`;
2. cut it into the model's segments as evaluation cuts a clip: a file no longer than one segment
   is zero-padded at its end to one segment; a longer one gets round(length / segment) segments
   spread evenly from its first to its last sample (consecutive, with small overlaps or gaps
   where the length is not a multiple), so a file of the training clip length is cut exactly as
   evaluation cuts a dataset clip, and a whole song is covered;
3. run the model's frontend (rebuilt from the checkpoint's Mel settings) and network on the
   segments and average the segment probabilities, as evaluation does per clip;
4. report the tags whose averaged probability reaches their stored threshold, and the top-k; a
   tag whose threshold fell back to 0.5 (validation had too few positives to choose one) is
   marked `*` with a footnote, and `?` where the checkpoint predates that record and its
   threshold is 0.5 (`--json`: ``threshold_fell_back`` true / null);
5. with `--taggram`, also slide the model's input window over the file with a hop and plot (and
   with `--json` report) the probabilities of every window (`tagging.taggram`); the
   report of step 4 is unchanged by it.

Broken inputs never stop a batch of files: a missing, empty, non-audio, corrupt or truncated
file (fewer samples decoded than the file declares, or a WAV whose data is shorter than its
header says) is reported with the reason and skipped; `run_tagging` returns 1 when any file
failed. Decoder chatter that libmpg123 prints on stderr from C is captured while decoding and
only shown as part of a failure's reason.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from datamodules.decoding import AudioDecodeError, DecodedAudio, decode_audio
from datamodules.frontend import MelConfig, build_frontend
from datamodules.segments import SegmentLayout
from infrastructure.errors import ConfigError
from lightning_modules.metrics import fallback_states
from tagging.taggram import DEFAULT_TAGGRAM_HOP_S, Taggram, check_hop, compute_taggram

AUDIO_EXTENSIONS = frozenset({".mp3", ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff",
                              ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"})
"""Suffixes tagged when a folder is walked (a file named explicitly is always tried)."""

DEFAULT_TOP_K = 5
FELL_BACK_MARK, UNKNOWN_MARK = "*", "?"
FELL_BACK_NOTE = "* threshold fell back to 0.5: too few validation positives to choose one"
UNKNOWN_NOTE = ("? threshold 0.5 may have fallen back: the checkpoint was saved before fallbacks were recorded "
                "(retrain or re-validate it to know)")


# One decoder for the cache and for tagging (datamodules/decoding.py): the same checks and messages,
# and a file read from its start gives exactly the samples the cache holds.
AudioError = AudioDecodeError
LoadedAudio = DecodedAudio
load_audio = decode_audio


def segment_starts(n_samples: int, segment_samples: int) -> np.ndarray:
    """Start offsets of the segments a waveform of `n_samples` is cut into (see the module docstring)."""
    if n_samples <= segment_samples:
        return np.zeros(1, dtype=np.int64)
    count = max(1, int(math.floor(n_samples / segment_samples + 0.5)))
    return SegmentLayout(segment_samples, count).starts(n_samples)


def cut_segments(waveform: np.ndarray, segment_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(segments (S, segment_samples) float32, starts (S,)): the waveform cut, or zero-padded to one segment."""
    waveform = np.asarray(waveform, dtype=np.float32)
    starts = segment_starts(len(waveform), segment_samples)
    if len(waveform) < segment_samples:
        waveform = np.pad(waveform, (0, segment_samples - len(waveform)))
    segments = np.stack([waveform[s:s + segment_samples] for s in starts])
    return segments, starts


@dataclass
class FileTags:
    """What the model says about one file."""

    path: str
    probs: np.ndarray  # (T,) segment-averaged probabilities
    segment_probs: np.ndarray  # (S, T)
    segment_starts_s: np.ndarray  # (S,) seconds from the excerpt's start
    segment_seconds: float
    tags: list[tuple[str, float]]  # above their thresholds, highest first
    top: list[tuple[str, float]]  # the top-k, highest first
    audio_seconds: float
    start_s: float
    source_rate: int
    channels: int
    thresholds: np.ndarray = field(repr=False, default=None)
    fell_back: dict[str, bool | None] = field(repr=False, default=None)  # tag: threshold fell back? (None: unknown)
    taggram: Taggram | None = field(repr=False, default=None)  # the sliding windows, when asked for

    def to_dict(self, tag_names: Sequence[str]) -> dict:
        """Plain JSON-able values: the tags above threshold, the top-k and every tag's score."""
        index = {name: i for i, name in enumerate(tag_names)}
        fell_back = self.fell_back or {}

        def entry(tag: str, score: float) -> dict:
            return {"tag": tag, "score": round(score, 6), "threshold": round(float(self.thresholds[index[tag]]), 6),
                    "threshold_fell_back": fell_back.get(tag, False)}

        return {
            "path": self.path, "start_s": self.start_s, "duration_s": round(self.audio_seconds, 3),
            "source_sample_rate": self.source_rate, "channels": self.channels,
            "segments": int(len(self.segment_starts_s)),
            "tags": [entry(t, s) for t, s in self.tags],
            "top": [entry(t, s) for t, s in self.top],
            "scores": {t: round(float(p), 6) for t, p in zip(tag_names, self.probs)},
        }


class Tagger:
    """A trained `TaggingModule` ready to tag waveforms and files.

    Args:
        module: the model (`TaggingModule.from_checkpoint(path)`).
        device: where the frontend and network run.
        batch_size: segments per forward pass.
    """

    def __init__(self, module, device: str | torch.device = "cpu", batch_size: int = 8):
        hparams = module.hparams
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.tags: list[str] = list(module.tags)
        self.thresholds = module.thresholds.detach().cpu().double().numpy()
        self.fell_back = fallback_states(module.threshold_fallback.detach().cpu())
        self.sample_rate = int(hparams.sample_rate)
        self.layout = SegmentLayout.from_dict(dict(hparams.layout))
        frontend = MelConfig.from_dict(dict(hparams.frontend)) if hparams.frontend is not None else None
        self.frontend = build_frontend(frontend).to(self.device)
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 8) -> Tagger:
        from lightning_modules.tagging_module import TaggingModule

        return cls(TaggingModule.from_checkpoint(path, map_location="cpu"), device=device, batch_size=batch_size)

    @property
    def segment_samples(self) -> int:
        return self.layout.segment_samples

    @torch.inference_mode()
    def segment_probabilities(self, segments: np.ndarray) -> np.ndarray:
        """(S, T) tag probabilities of (S, segment_samples) float waveforms."""
        out = []
        for begin in range(0, len(segments), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(segments[begin:begin + self.batch_size])).to(self.device)
            logits = self.module(self.frontend(batch))
            out.append(torch.sigmoid(logits.float()).cpu())
        return torch.cat(out).double().numpy()

    def tag_waveform(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probs (T,), segment_probs (S, T), starts (S,) in samples) of a mono waveform at the model's rate."""
        segments, starts = cut_segments(waveform, self.segment_samples)
        segment_probs = self.segment_probabilities(segments)
        return segment_probs.mean(axis=0), segment_probs, starts

    def ranked(self, probs: np.ndarray, top_k: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """(tags at or above their thresholds, top-k), each as (tag, score) from the highest score."""
        order = np.argsort(-probs, kind="stable")
        above = [(self.tags[i], float(probs[i])) for i in order if probs[i] >= self.thresholds[i]]
        top = [(self.tags[i], float(probs[i])) for i in order[:top_k]]
        return above, top

    def tag_file(self, path: str | Path, *, start_s: float = 0.0, duration_s: float | None = None,
                 top_k: int = DEFAULT_TOP_K, taggram_hop_s: float | None = None) -> FileTags:
        """Tag one file; with `taggram_hop_s`, also slide the input window over it (`FileTags.taggram`)."""
        audio = load_audio(path, start_s=start_s, duration_s=duration_s, sample_rate=self.sample_rate)
        probs, segment_probs, starts = self.tag_waveform(audio.waveform)
        above, top = self.ranked(probs, top_k)
        taggram = None
        if taggram_hop_s is not None:
            taggram = compute_taggram(self, audio.waveform, audio.start_s, taggram_hop_s)
        return FileTags(
            path=str(path), probs=probs, segment_probs=segment_probs, segment_starts_s=starts / self.sample_rate,
            segment_seconds=self.segment_samples / self.sample_rate, tags=above, top=top,
            audio_seconds=audio.seconds, start_s=audio.start_s, source_rate=audio.source_rate,
            channels=audio.channels, thresholds=self.thresholds, fell_back=dict(zip(self.tags, self.fell_back)),
            taggram=taggram)


# --------------------------------------------------------------------------------------------
# Files, folders and the command
# --------------------------------------------------------------------------------------------
def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's best checkpoint (as `--evaluate` finds it)."""
    from experiments.run_folder import locate_checkpoint

    return locate_checkpoint(path)[0]


@dataclass
class Inputs:
    """The files to tag, the inputs that failed before decoding, and files ignored in folders."""

    files: list[Path]
    failures: list[tuple[str, str]]
    ignored: list[Path]


def find_audio_files(paths: Sequence[str | Path]) -> Inputs:
    """Explicit files as given; folders walked recursively for audio suffixes (hidden entries skipped)."""
    files: list[Path] = []
    failures: list[tuple[str, str]] = []
    ignored: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = 0
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if name.startswith("."):
                        continue
                    candidate = Path(root) / name
                    if candidate.suffix.lower() in AUDIO_EXTENSIONS:
                        files.append(candidate)
                        found += 1
                    else:
                        ignored.append(candidate)
            if not found:
                failures.append((str(path), "no audio files in this folder"))
        elif path.exists():
            files.append(path)
        else:
            failures.append((str(path), "no such file or folder"))
    unique: dict[Path, Path] = {}
    for file in files:  # a file named and also found in a folder is tagged once
        unique.setdefault(file.resolve(), file)
    return Inputs(list(unique.values()), failures, ignored)


def _device(accelerator: str) -> torch.device:
    accelerator = (accelerator or "auto").lower()
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator in ("auto", "gpu", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if accelerator != "auto":
            raise ConfigError(f"--accelerator {accelerator}: no CUDA device here")
        return torch.device("cpu")
    raise ConfigError(f"--accelerator {accelerator}: tagging runs on cpu, gpu or auto")


def format_text(result: FileTags) -> str:
    """The human-readable report of one file."""
    channels = {1: "mono", 2: "stereo"}.get(result.channels, f"{result.channels} channels")
    where = f" from {result.start_s:g} s" if result.start_s else ""
    head = (f"{result.path}  ({result.audio_seconds:.1f} s{where}, {result.source_rate} Hz {channels}, "
            f"{len(result.segment_starts_s)} segment{'s' if len(result.segment_starts_s) != 1 else ''})")
    marks = {t: FELL_BACK_MARK if state else UNKNOWN_MARK for t, state in (result.fell_back or {}).items()
             if state is not False}
    tags = ", ".join(f"{t} ({s:.2f}{marks.get(t, '')})" for t, s in result.tags) or "(none above its threshold)"
    top = ", ".join(f"{t} {s:.3f}{marks.get(t, '')}" for t, s in result.top)
    lines = [head, f"  tags:  {tags}", f"  top {len(result.top)}: {top}"]
    shown = {t for t, _ in result.tags} | {t for t, _ in result.top}
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


def write_taggram(result: FileTags, tags: Sequence[str], path: Path) -> Path:
    """The file's taggram (its sliding windows, `tagging.taggram`) as a PNG at `path`."""
    from tagging.taggram import write_taggram_png

    return write_taggram_png(result.taggram, tags, result.probs, result.thresholds, Path(result.path).name, path,
                             fell_back=result.fell_back)


def run_tagging(paths: Sequence[str | Path], checkpoint: str | Path, *, top_k: int = DEFAULT_TOP_K,
                json_output: bool = False, taggram: str | Path | None = None, start_s: float | None = None,
                duration_s: float | None = None, accelerator: str = "auto", progress: bool = True,
                out: TextIO | None = None, err: TextIO | None = None, model: str | None = None,
                taggram_hop_s: float | None = None) -> int:
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
    checkpoint_path = resolve_checkpoint(checkpoint)
    tagger = Tagger.from_checkpoint(checkpoint_path, device=_device(accelerator))
    network = tagger.module.hparams.network_config.get("name")
    if model and model != network:
        raise ConfigError(f"--model {model} does not match the checkpoint's network ({network}): {checkpoint_path}")
    if taggram:
        check_hop(taggram_hop_s, tagger.sample_rate)  # before any file: a bad hop is one error, not one per file
    inputs = find_audio_files(paths)
    failures = list(inputs.failures)
    results: list[FileTags] = []
    taggrams = taggram_paths(Path(taggram).expanduser().resolve(), inputs.files) if taggram else {}
    # disable=None: a bar only on a terminal
    bar = tqdm(inputs.files, desc="tagging", unit="file", file=err,
               disable=True if not progress or len(inputs.files) < 2 else None, dynamic_ncols=True)
    for file in bar:
        try:
            result = tagger.tag_file(file, start_s=start_s, duration_s=duration_s, top_k=top_k,
                                     taggram_hop_s=taggram_hop_s if file in taggrams else None)
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
            "checkpoint": str(checkpoint_path), "tags": tagger.tags,
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
