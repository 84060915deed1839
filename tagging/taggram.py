"""The taggram: tag probabilities through a song, window by window (`Tagger.taggram`, `run.py --tag --taggram`).

Why a pass of its own: the tag list printed per file is the chunk average evaluation computes
(the file cut into round(length / input) consecutive model inputs, `tagging.reading`), and it stays
exactly that. Those chunks give no time resolution when the model's input is long (mel_cnn reads
29.1 s: a 29 s clip is one chunk), so the taggram frames the song as a centred STFT frames a
signal: a window of the model's input length centred on every hop (`--taggram-hop`, default 3 s,
whatever the input length), every window a full model input, as in training.

Windows, for an excerpt of n samples, a model input of w samples and a hop of h samples
(h = round(hop seconds x 16 kHz)): W = floor(n / h) + 1 windows, window k centred on sample k h,
i.e. covering samples [k h - floor(w / 2), k h - floor(w / 2) + w). A window reaching outside the
excerpt is padded the way training pads a clip shorter than its input: the audio it holds first,
then zeros up to the input length (`padded[k]`: the fraction of window k that is padding). So every model, a whole-clip one on a
clip shorter than its input included, gets a column per hop: near the start a window holds the
song's first w / 2 seconds behind silence, near the end its last ones before silence, and in
between (for a song longer than w) only music. A column's value is the model's reading of the
music within w / 2 of its time; a padded column reads less music, and the silence in it weighs
as silence did in training (docs/tagging.md, "Reading a taggram").

Times are seconds of the song (the excerpt's `--start` added): window k's centre is
start + k h / 16000. In the image each window is a column one hop wide centred on its centre,
clipped to the excerpt, so the x axis is song time.

The rows are the file's `TAGGRAM_ROWS` highest-scoring tags by the printed chunk average (all of
them when the model has fewer), in that order from the top, so the picture and the printed list
agree; tags at or above their threshold are labelled in bold, a tag whose threshold fell back to
0.5 (too few validation positives to choose one) is labelled with a `*`, and `?` where that is
unknown (a checkpoint from before fallbacks were recorded). `--json` adds every tag's
per-window probabilities (`Taggram.to_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infrastructure.errors import ConfigError

DEFAULT_TAGGRAM_HOP_S = 3.0
"""Seconds between the starts of consecutive taggram windows (musicnn's taggram also uses 3 s)."""

TAGGRAM_ROWS = 20
"""Tags shown in the image: the file's strongest (every tag's values are in the JSON)."""


def check_hop(hop_s: float, sample_rate: int) -> int:
    """The hop in samples; ConfigError unless it is a finite number of seconds of at least one sample."""
    try:
        hop_s = float(hop_s)
    except (TypeError, ValueError):
        raise ConfigError(f"--taggram-hop must be a number of seconds, got {hop_s!r}") from None
    if not math.isfinite(hop_s) or hop_s <= 0:
        raise ConfigError(f"--taggram-hop must be a positive number of seconds, got {hop_s:g}")
    hop = int(round(hop_s * sample_rate))
    if hop < 1:
        raise ConfigError(f"--taggram-hop {hop_s:g} s is shorter than one sample at {sample_rate} Hz")
    return hop


def window_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Start offsets (int64, negative before the excerpt) of the centred windows of a taggram (see the module
    docstring): window k starts at k hop - window // 2."""
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be positive sample counts, got {window} and {hop}")
    return np.arange(n_samples // hop + 1, dtype=np.int64) * hop - window // 2


def padded_fractions(n_samples: int, window: int, starts: np.ndarray) -> np.ndarray:
    """The fraction of each window (starting at `starts`) that lies outside an excerpt of `n_samples`."""
    inside = np.clip(starts + window, 0, n_samples) - np.clip(starts, 0, n_samples)
    return 1.0 - inside / window


@dataclass
class Taggram:
    """Tag probabilities of the model's input window centred on every hop of one excerpt."""

    starts_s: np.ndarray  # (W,) window starts, seconds of the song (before the excerpt for the first ones)
    centres_s: np.ndarray  # (W,) window centres
    probs: np.ndarray  # (W, T)
    window_s: float  # the model's input length
    hop_s: float  # the hop actually used (a whole number of samples)
    padded: np.ndarray  # (W,) fraction of each window that is zero padding (outside the excerpt)
    excerpt: tuple[float, float]  # (start, end) seconds of the song that were decoded

    @property
    def windows(self) -> int:
        return int(len(self.starts_s))

    def column_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) seconds of each window's column in the image: one hop wide, clipped to the excerpt."""
        left = np.clip(self.centres_s - self.hop_s / 2, *self.excerpt)
        right = np.clip(self.centres_s + self.hop_s / 2, *self.excerpt)
        return left, right

    def to_dict(self, tag_names: Sequence[str]) -> dict:
        """JSON-able: times in seconds of the song, each window's padding, and every tag's probability per window."""
        if self.probs.shape != (self.windows, len(tag_names)):
            raise ValueError(f"taggram of shape {self.probs.shape} for {self.windows} windows and "
                             f"{len(tag_names)} tags")
        return {
            "window_s": round(self.window_s, 6), "hop_s": round(self.hop_s, 6), "windows": self.windows,
            "starts_s": [round(float(t), 6) for t in self.starts_s],
            "centres_s": [round(float(t), 6) for t in self.centres_s],
            "padded": [round(float(p), 6) for p in np.broadcast_to(self.padded, (self.windows,))],
            "probs": {tag: [round(float(p), 6) for p in self.probs[:, i]] for i, tag in enumerate(tag_names)},
        }

    def describe(self) -> str:
        """A few words for the text report: how many windows, of what, how far apart."""
        padded = int(np.count_nonzero(np.broadcast_to(self.padded, (self.windows,)) > 0))
        return (f"{self.windows} window{'s' if self.windows != 1 else ''} of {self.window_s:.1f} s centred every "
                f"{self.hop_s:g} s, {padded} partly padded")


def compute_taggram(tagger, waveform: np.ndarray, start_s: float, hop_s: float = DEFAULT_TAGGRAM_HOP_S) -> Taggram:
    """Centre `tagger`'s input window on every hop of `waveform` (mono, at the model's rate, starting at `start_s`
    in the song); a window reaching outside it holds its audio first, then zeros (as training pads).

    The windows that start inside the song are strided views of it, batched by `tagger.segment_probabilities`,
    so a long song with a long input (mel_cnn: 29.1 s every 3 s) is never copied window by window.
    """
    rate = tagger.sample_rate
    window = tagger.segment_samples
    hop = check_hop(hop_s, rate)
    waveform = np.asarray(waveform, dtype=np.float32)
    n = len(waveform)
    starts = window_starts(n, window, hop)
    before = window // 2
    # a window's audio first, then zeros up to the input length: how training pads a short clip
    tail = np.concatenate([waveform, np.zeros(window, np.float32)])
    early = starts < 0
    head = np.zeros((int(early.sum()), window), np.float32)
    for row, s in zip(head, starts[early]):
        row[:window + s] = tail[:window + s]
    rest = np.lib.stride_tricks.sliding_window_view(tail, window)[starts[~early]] if (~early).any() else head[:0]
    probs = np.concatenate([tagger.segment_probabilities(head), tagger.segment_probabilities(rest)])
    return Taggram(starts_s=start_s + starts / rate, centres_s=start_s + (starts + before) / rate, probs=probs,
                   window_s=window / rate, hop_s=hop / rate, padded=padded_fractions(n, window, starts),
                   excerpt=(float(start_s), float(start_s + n / rate)))


def taggram_plot(taggram: Taggram, tags: Sequence[str], file_probs: np.ndarray, thresholds: np.ndarray,
                 name: str, rows: int = TAGGRAM_ROWS, fell_back: Mapping[str, bool | None] | None = None):
    """The taggram figure of one file named `name`: see the module docstring for rows, columns and marks.

    `fell_back`: per tag, whether its threshold fell back to 0.5 (None: unknown; missing: chosen).
    """
    from experiments.reporting.figures import taggram_figure

    file_probs = np.asarray(file_probs, dtype=float)
    shown = min(rows, len(tags))
    marks = {t: "*" if state else "?" for t, state in (fell_back or {}).items() if state is not False}
    top = np.argsort(-file_probs, kind="stable")[:rows]  # the rows shown (as taggram_figure orders them)
    shown_marks = {marks.get(tags[i]) for i in top}
    tags = [t + marks.get(t, "") for t in tags]
    above = {tags[i] for i in range(len(tags)) if file_probs[i] >= thresholds[i]}
    what = f"model input {taggram.window_s:.1f} s centred every {taggram.hop_s:g} s"
    which = (f"the file's top {shown} of {len(tags)} tags" if shown < len(tags)
             else f"all {shown} tags, strongest on top")
    title = f"{name}\ntag probability over the song: {what}; {which} (bold: above its threshold)"
    if "*" in shown_marks:
        title += "\n*: threshold fell back to 0.5 (too few validation positives to choose one)"
    if "?" in shown_marks:
        title += "\n?: threshold 0.5, chosen or fallen back (checkpoint from before fallbacks were recorded)"
    left, right = taggram.column_edges()
    xlabel = "time in the song (s); each column: a window centred there (zero-padded past the song's ends)"
    return taggram_figure(left, right, taggram.probs, tags, title, order_by=file_probs, rows=rows, bold=above,
                          xlim=taggram.excerpt, xlabel=xlabel)


def write_taggram_png(taggram: Taggram, tags: Sequence[str], file_probs: np.ndarray, thresholds: np.ndarray,
                      name: str, path: Path, fell_back: Mapping[str, bool | None] | None = None) -> Path:
    """Render `taggram_plot` to the PNG `path` (atomically)."""
    from experiments.reporting.figures import save_figure

    return save_figure(taggram_plot(taggram, tags, file_probs, thresholds, name, fell_back=fell_back), path)
