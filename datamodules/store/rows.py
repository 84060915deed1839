"""One MP3 in, one cache row out: mono int16 of exactly the clip length, or the reason it is skipped."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.decoding import AudioDecodeError, AudioDecoder
from datamodules.store.format import SAMPLE_DTYPE
from infrastructure.audio import INT16_SCALE

LENGTH_TOLERANCE = 1152
"""Largest accepted difference between decoded and expected clip length, in samples: two
MPEG-2 layer III frames (576 samples each at 16 kHz)."""


@dataclass(frozen=True)
class DecodedClip:
    """Result of decoding one MP3 for the cache.

    Attributes:
        status: one of `datamodules.store.format.STATUSES` (never ``pending``).
        decoded_samples: length decoded (0 when nothing was decoded).
        samples: (clip_samples,) int16 when ``status == "ok"``, else None.
        detail: a short human-readable reason for a failed status ("" when ok).
    """

    status: str
    decoded_samples: int
    samples: np.ndarray | None
    detail: str = ""


def float_to_int16(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Map float audio in [-1, 1] to int16 the way the cache stores it (round(x * 32768), clipped).

    Works in float32: scaling by 2^15 is exact in float32, so the result equals the float64
    computation at a fraction of its cost (this conversion runs once per decoded sample). With
    ``out`` (int16, same length) the result is written there and ``x`` (float32) is used as
    scratch space and overwritten; without it ``x`` is left alone.
    """
    if out is None:
        scaled = np.multiply(x, np.float32(INT16_SCALE), dtype=np.float32)
    else:
        scaled = np.multiply(x, np.float32(INT16_SCALE), out=x)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768, 32767, out=scaled)
    if out is None:
        return scaled.astype(SAMPLE_DTYPE)
    np.copyto(out, scaled, casting="unsafe")
    return out


class ClipDecoder:
    """Decodes MP3s to the cache's mono int16 rows, reusing its buffers from clip to clip.

    The file checks, the decoding and its messages are `datamodules.decoding.AudioDecoder`'s
    (no resampling: a file at another rate is skipped; the length is judged here). A worker keeps
    one decoder for its whole chunk, so the float buffer is allocated once; the ``samples`` of a
    returned `DecodedClip` is a view into the decoder's buffer, valid until the next `decode`.
    Rows equal ``soundfile.read(path, dtype="float32")`` scaled by `float_to_int16`.
    """

    def __init__(self, clip_samples: int) -> None:
        self.clip_samples = int(clip_samples)
        self.limit = self.clip_samples + LENGTH_TOLERANCE + 1
        self._decoder = AudioDecoder(resample=False, strict=False)
        self._row = np.zeros(self.clip_samples, dtype=SAMPLE_DTYPE)

    def decode(self, path: Path) -> DecodedClip:
        """Decode one MP3 to mono int16 of exactly ``clip_samples`` samples, or say why not.

        Memory is bounded by one clip: at most ``clip_samples + LENGTH_TOLERANCE + 1`` frames are
        kept; the rest of an over-long file is only counted.
        """
        clip_samples = self.clip_samples
        try:
            audio = self._decoder.decode(path, keep_frames=self.limit)
        except AudioDecodeError as error:
            return DecodedClip(error.status, 0, None, error.detail)
        decoded = audio.decoded_frames
        if abs(decoded - clip_samples) > LENGTH_TOLERANCE:
            return DecodedClip("wrong_length", decoded, None, f"{decoded} samples, expected {clip_samples}")
        n = min(clip_samples, len(audio.waveform))
        float_to_int16(audio.waveform[:n], out=self._row[:n])
        self._row[n:] = 0
        return DecodedClip("ok", decoded, self._row)


def decode_clip(path: Path, clip_samples: int) -> DecodedClip:
    """`ClipDecoder.decode` for a single file (its samples are the caller's own array)."""
    return ClipDecoder(clip_samples).decode(path)
