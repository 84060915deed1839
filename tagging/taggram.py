"""The taggram of `run.py --tag --taggram`: tag probabilities through a song, window by window.

Why a pass of its own: the tag list printed per file is the chunk average evaluation computes
(the file cut into round(length / input) consecutive model inputs, see `tagger`), and it stays
exactly that. Those chunks give no time resolution when the model's input is long (mel_cnn reads
29.1 s: a 3-minute song is 6 chunks, a 29 s clip one), so the taggram slides the model's input
window over the excerpt with a hop instead (`--taggram-hop`, default 3 s, whatever the input
length), as musicnn's taggram does; every window is a full model input, as in training.

Windows, for an excerpt of n samples, a model input of w samples and a hop of h samples
(h = round(hop seconds x 16 kHz)):

* n <= w: one window, the excerpt zero-padded at its end to w samples (as the chunk pass pads);
* n > w: W = floor((n - w) / h) + 1 windows starting at 0, h, 2h, ...; none is padded and none
  passes the end, so the last (n - w) mod h samples (less than one hop) are in no window (they
  still count in the printed chunk average).

Times are seconds of the song (the excerpt's `--start` added): a window starts at
start + k h / 16000 and its centre is w / 2 later (for a padded window: the middle of the audio
it holds). In the image each window is a column one hop wide centred on its centre (a lone
window spans the audio it holds), so the x axis is song time; the parts of the song
before the first centre and after the last one are grey, since no window is centred there.

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
    """Start offsets (int64) of the windows of a taggram (see the module docstring)."""
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be positive sample counts, got {window} and {hop}")
    if n_samples <= window:
        return np.zeros(1, dtype=np.int64)
    return np.arange((n_samples - window) // hop + 1, dtype=np.int64) * hop


@dataclass
class Taggram:
    """Tag probabilities of the model's input window slid over one excerpt."""

    starts_s: np.ndarray  # (W,) window starts, seconds of the song
    centres_s: np.ndarray  # (W,) window centres (a padded window: the middle of its audio)
    probs: np.ndarray  # (W, T)
    window_s: float  # the model's input length
    hop_s: float  # the hop actually used (a whole number of samples)
    padded: bool  # one window, zero-padded: the excerpt is shorter than the model's input
    excerpt: tuple[float, float]  # (start, end) seconds of the song that were decoded

    @property
    def windows(self) -> int:
        return int(len(self.starts_s))

    def column_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) seconds of each window's column in the image."""
        if self.windows == 1:
            first = float(self.starts_s[0])
            return np.array([first]), np.array([min(first + self.window_s, self.excerpt[1])])
        return self.centres_s - self.hop_s / 2, self.centres_s + self.hop_s / 2

    def to_dict(self, tag_names: Sequence[str]) -> dict:
        """JSON-able: times in seconds of the song, and every tag's probability per window."""
        if self.probs.shape != (self.windows, len(tag_names)):
            raise ValueError(f"taggram of shape {self.probs.shape} for {self.windows} windows and "
                             f"{len(tag_names)} tags")
        return {
            "window_s": round(self.window_s, 6), "hop_s": round(self.hop_s, 6), "windows": self.windows,
            "padded": self.padded,
            "starts_s": [round(float(t), 6) for t in self.starts_s],
            "centres_s": [round(float(t), 6) for t in self.centres_s],
            "probs": {tag: [round(float(p), 6) for p in self.probs[:, i]] for i, tag in enumerate(tag_names)},
        }

    def describe(self) -> str:
        """A few words for the text report: how many windows, and why only one when so."""
        if self.windows > 1:
            return f"{self.windows} windows of {self.window_s:.1f} s every {self.hop_s:g} s"
        length = self.excerpt[1] - self.excerpt[0]
        return (f"1 window: the {length:.1f} s excerpt is not a hop ({self.hop_s:g} s) longer than the "
                f"model's {self.window_s:.1f} s input, so there is no time resolution")


def compute_taggram(tagger, waveform: np.ndarray, start_s: float, hop_s: float = DEFAULT_TAGGRAM_HOP_S) -> Taggram:
    """Slide `tagger`'s input window over `waveform` (mono, at the model's rate) that starts at `start_s` in the song.

    The windows are strided views of the waveform, batched by `tagger.segment_probabilities`, so
    a long song with a long input (mel_cnn: 29.1 s every 3 s) is never copied window by window.
    """
    rate = tagger.sample_rate
    window = tagger.segment_samples
    hop = check_hop(hop_s, rate)
    waveform = np.asarray(waveform, dtype=np.float32)
    n = len(waveform)
    starts = window_starts(n, window, hop)
    padded = n < window
    if n <= window:
        windows = np.pad(waveform, (0, window - n))[None, :]
        centres = np.array([n / 2])
    else:
        windows = np.lib.stride_tricks.sliding_window_view(waveform, window)[::hop]  # a view: starts 0, h, 2h...
        assert len(windows) == len(starts)
        centres = starts + window / 2
    probs = tagger.segment_probabilities(windows)
    return Taggram(starts_s=start_s + starts / rate, centres_s=start_s + centres / rate, probs=probs,
                   window_s=window / rate, hop_s=hop / rate, padded=padded,
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
    what = (f"model input {taggram.window_s:.1f} s, one window every {taggram.hop_s:g} s"
            if taggram.windows > 1 else f"one {taggram.window_s:.1f} s model input (the excerpt is too short "
                                        f"for more)")
    which = (f"the file's top {shown} of {len(tags)} tags" if shown < len(tags)
             else f"all {shown} tags, strongest on top")
    title = f"{name}\ntag probability over the song: {what}; {which} (bold: above its threshold)"
    if "*" in shown_marks:
        title += "\n*: threshold fell back to 0.5 (too few validation positives to choose one)"
    if "?" in shown_marks:
        title += "\n?: threshold 0.5, chosen or fallen back (checkpoint from before fallbacks were recorded)"
    left, right = taggram.column_edges()
    xlabel = ("time in the song (s); each column: a window centred there" if taggram.windows > 1
              else "time in the song (s)")
    return taggram_figure(left, right, taggram.probs, tags, title, order_by=file_probs, rows=rows, bold=above,
                          xlim=taggram.excerpt, xlabel=xlabel)


def write_taggram_png(taggram: Taggram, tags: Sequence[str], file_probs: np.ndarray, thresholds: np.ndarray,
                      name: str, path: Path, fell_back: Mapping[str, bool | None] | None = None) -> Path:
    """Render `taggram_plot` to the PNG `path` (atomically)."""
    from experiments.reporting.figures import save_figure

    return save_figure(taggram_plot(taggram, tags, file_probs, thresholds, name, fell_back=fell_back), path)
