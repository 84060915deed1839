"""How a file becomes the model's segments, in bounded memory: a plan, pieces of it, and their samples.

A file is cut the way evaluation cuts a clip: a file no longer than one model input (segment) is
zero-padded at its end to one segment, as training pads a short clip; a longer one gets
round(length / segment) segments spread evenly from its first sample to its last (consecutive, with
small overlaps or gaps where the length is not a multiple), so a file of the training clip length
is cut exactly as evaluation cuts a dataset clip, and a whole song is covered.

The segments are read in *pieces*: runs of consecutive segments spanning at most `PIECE_SECONDS` of
audio, each decoded on its own (`AudioDecoder.read_span`: only the frames it needs, resampled with
the filter's margins, so the samples equal those of a whole-file decode). Memory then follows the
piece, never the file: a three-hour recording costs what five minutes cost. The catalogue's
worker processes each decode a piece (`tagging.catalogue`); `Tagger` reads them one after the
other; both get the same segments.

Files are decoded with tagging's tolerant policy (`datamodules.decoding.TAGGING_SHORTFALL`): a file
that delivers slightly less than it declares (a misplaced Ogg page, a cut-off last frame) is
tagged with its missing tail as silence, and the shortfall is reported; one cut by more is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.decoding import TAGGING_SHORTFALL, AudioDecoder, AudioPlan
from datamodules.segments import SegmentLayout

PIECE_SECONDS = 300.0
"""Audio one piece spans at most (one segment at least, whatever its length)."""


def tagging_decoder(sample_rate: int) -> AudioDecoder:
    """The decoder of tagging: any rate resampled, strict checks, the tolerated shortfall."""
    return AudioDecoder(sample_rate, resample=True, strict=True, shortfall=TAGGING_SHORTFALL)


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


def piece_ranges(starts: np.ndarray, segment_samples: int, piece_samples: int) -> tuple[tuple[int, int], ...]:
    """Runs [i, j) of consecutive segments whose audio spans at most `piece_samples` (one segment at least)."""
    pieces, i = [], 0
    while i < len(starts):
        j = i + 1
        while j < len(starts) and starts[j] + segment_samples - starts[i] <= piece_samples:
            j += 1
        pieces.append((i, j))
        i = j
    return tuple(pieces)


@dataclass(frozen=True)
class FilePlan:
    """One file's segments and pieces (small and picklable: worker processes read the pieces)."""

    audio: AudioPlan
    segment_samples: int
    starts: tuple[int, ...]
    pieces: tuple[tuple[int, int], ...]

    @property
    def segments(self) -> int:
        return len(self.starts)


def plan_file(decoder: AudioDecoder, path: str | Path, segment_samples: int, *, start_s: float = 0.0,
              duration_s: float | None = None, piece_seconds: float = PIECE_SECONDS) -> FilePlan:
    """The plan of `path` (or of its excerpt) for segments of `segment_samples` (AudioDecodeError: unusable file)."""
    audio = decoder.plan(path, start_s=start_s, duration_s=duration_s)
    starts = segment_starts(audio.samples, segment_samples)
    piece_samples = max(segment_samples, int(piece_seconds * decoder.sample_rate))
    return FilePlan(audio, segment_samples, tuple(int(s) for s in starts),
                    piece_ranges(starts, segment_samples, piece_samples))


def read_piece(decoder: AudioDecoder, plan: FilePlan, piece: int) -> tuple[np.ndarray, int | None]:
    """(segments (m, segment_samples) float32 of piece `piece`, where decoding stopped short or None)."""
    i, j = plan.pieces[piece]
    starts = np.asarray(plan.starts[i:j], dtype=np.int64)
    first, w = int(starts[0]), plan.segment_samples
    span = decoder.read_span(plan.audio, first, int(starts[-1]) + w)
    windows = np.lib.stride_tricks.sliding_window_view(span.samples, w)
    return np.ascontiguousarray(windows[starts - first]), span.decoded_end


def read_segments(decoder: AudioDecoder, plan: FilePlan):
    """Yield (first segment index, segments) piece by piece; then `decoder.finish` judges the file's shortfall.

    The generator's return value (StopIteration.value) is the shortfall in source frames.
    """
    ends = []
    for k, (i, _) in enumerate(plan.pieces):
        segments, end = read_piece(decoder, plan, k)
        if end is not None:
            ends.append(end)
        yield i, segments
    return decoder.finish(plan.audio, min(ends) if ends else None)
