"""One audio decoder for the whole suite: a file in, mono float32 at 16 kHz out, or one clear error.

Both users of audio files go through `AudioDecoder`: the waveform cache (`datamodules.store`,
MTAT's MP3s, thousands per second across workers) and tagging (`--tag`, a user's files of any
format, rate and length). They share the file checks, the decoding through soundfile (MP3, WAV,
FLAC, OGG/Vorbis/Opus, AIFF, ...; no FFmpeg) and the error messages; they differ in policy,
chosen per decoder:

* ``resample``: tagging resamples any rate to 16 kHz (torchaudio); the cache stores the file's own
  samples, so a file at another rate is an error (status ``wrong_rate``).
* ``strict``: tagging takes a user's file as it declares itself: fewer samples decoded than the
  file declares (a truncated MP3 decodes without error but short), a WAV whose data is shorter
  than its header says, no samples at all, or NaN/infinite samples are errors, and what
  libmpg123 prints on stderr from C while decoding is captured and shown only as part of such an
  error. The cache judges a clip's length itself (it accepts a small tolerance around the
  expected clip length, whatever the header declares) and leaves the decoder's messages on stderr.
* ``keep_frames`` (per call): bounded memory for a file of unknown true length: at most this many
  frames are kept, in a buffer the decoder reuses from call to call (a fresh clip-sized buffer per
  file costs page faults and zeroing comparable to a third of an MP3 decode); the frames after
  them are decoded and counted only.

The decoder always seeks to its start frame before reading, as ``soundfile.read`` does: after a
seek libsndfile's MP3 path returns values that differ by 1 ulp from a read of a freshly opened
file, so seeking every time makes every reader of a file (cache, tagging, ``soundfile.read``)
get the same samples.

Errors are `AudioDecodeError` (a `DataError`, so run.py prints it as one line): its ``status`` is
one of `DECODE_STATUSES` (the cache records it per clip), its ``detail`` the reason without the
path, and its message ``"<path>: <detail>"``. Options that cannot work (a negative start) raise
`ConfigError`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError, DataError

DECODE_STATUSES = ("missing", "empty", "decode_error", "wrong_length", "wrong_rate")
"""Why a file could not be decoded: no such (regular) file; a zero-byte file; the decoder refused
it (or it holds NaN/inf); fewer samples than declared or asked for; a rate other than the
decoder's (without resampling)."""

_READ_BLOCK = 1 << 16
_HEADER_MISMATCH = re.compile(r"^\s*data\s*:\s*\d+\s*\(should be \d+\)", re.MULTILINE)


class AudioDecodeError(DataError):
    """One file could not be decoded; callers that go through many files report it and go on.

    Attributes:
        path: the file.
        status: one of `DECODE_STATUSES`.
        detail: the reason, without the path.
        decoded_frames: frames decoded before the problem was found (0 when none).
    """

    def __init__(self, path: str | Path, status: str, detail: str, decoded_frames: int = 0):
        self.path, self.status, self.detail, self.decoded_frames = Path(path), status, detail, int(decoded_frames)
        super().__init__(f"{path}: {detail}")


@dataclass
class DecodedAudio:
    """A decoded, mono excerpt of a file.

    Attributes:
        waveform: float32 mono samples at `sample_rate`. With ``keep_frames`` a view into the
            decoder's buffer, valid until its next `AudioDecoder.decode`.
        sample_rate: rate of `waveform` (Hz).
        source_rate: the file's rate (Hz).
        channels: the file's channel count (mixed down to mono by averaging).
        source_frames: frames the file declares (at `source_rate`).
        start_frame: first decoded frame (at `source_rate`).
        decoded_frames: frames decoded from `start_frame` (with ``keep_frames``, the ones counted
            beyond the kept ones included).
    """

    waveform: np.ndarray
    sample_rate: int
    source_rate: int
    channels: int
    source_frames: int
    start_frame: int
    decoded_frames: int

    @property
    def seconds(self) -> float:
        return len(self.waveform) / self.sample_rate

    @property
    def source_seconds(self) -> float:
        """Length of the whole file as it declares it (s)."""
        return self.source_frames / self.source_rate

    @property
    def start_s(self) -> float:
        """Where the excerpt starts in the file (s)."""
        return self.start_frame / self.source_rate


def check_audio_file(path: str | Path) -> int:
    """The size in bytes of ``path``, after checking it is a non-empty regular file.

    Raises:
        AudioDecodeError: status ``missing`` (no such file, or not a regular file) or ``empty``.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise AudioDecodeError(path, "missing", "no such file") from None
    if not path.is_file():
        raise AudioDecodeError(path, "missing", "not a regular file")
    if size == 0:
        raise AudioDecodeError(path, "empty", "empty file (0 bytes)")
    return size


@contextlib.contextmanager
def captured_c_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 to a temporary file; the yielded list gets its non-empty lines at exit.

    Python's warning filters cannot hide what C libraries (libmpg123) print; this can.
    """
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())


def _reason(error: Exception, decoder_lines: Sequence[str]) -> str:
    text = str(error)
    # libsndfile's text for unrecognised data is misleading ("File does not exist or is not a regular file")
    if "does not exist or is not a regular file" in text or "Format not recognised" in text:
        text = "not a readable audio file (unknown format or corrupt data)"
    if decoder_lines:
        text += f" [decoder: {decoder_lines[0].strip()}]"
    return text


class AudioDecoder:
    """Decodes audio files to mono float32 at ``sample_rate`` (see the module docstring for the policies).

    Args:
        sample_rate: rate of the decoded samples (Hz).
        resample: resample files at other rates (torchaudio); False: they raise status ``wrong_rate``.
        strict: check the decoded audio against what the file declares, and capture the C
            decoder's stderr into the errors (tagging); False leaves the length to the caller (the cache).
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, *, resample: bool = True, strict: bool = True):
        self.sample_rate, self.resample, self.strict = int(sample_rate), resample, strict
        self._buffers: dict[tuple[int, int], np.ndarray] = {}  # (frames, channels) -> float32 buffer

    def _buffer(self, frames: int, channels: int) -> np.ndarray:
        key = (frames, channels)
        if key not in self._buffers:
            self._buffers[key] = np.empty((frames, channels), dtype=np.float32)
        return self._buffers[key]

    def decode(self, path: str | Path, *, start_s: float = 0.0, duration_s: float | None = None,
               keep_frames: int | None = None) -> DecodedAudio:
        """Decode ``path`` (or ``duration_s`` seconds of it from ``start_s``) to mono float32.

        Args:
            path: the file.
            start_s / duration_s: the excerpt (default: the whole file).
            keep_frames: keep at most this many frames, in a reused buffer, and count the rest to
                the end of the decodable data, whatever the header declares (not with ``duration_s``).

        Raises:
            AudioDecodeError: the file is missing, empty, unreadable, corrupt, at another rate
                (without resampling) or, strict, truncated; or the start lies past its end.
            ConfigError: a negative start or a non-positive duration.
        """
        path = Path(path)
        check_audio_file(path)
        if start_s < 0 or (duration_s is not None and duration_s <= 0):
            raise ConfigError(f"start must be >= 0 and duration > 0 seconds (got {start_s}, {duration_s})")
        if keep_frames is not None and duration_s is not None:
            raise ValueError("keep_frames reads to the end of the file: it cannot be combined with duration_s")
        capture = captured_c_stderr() if self.strict else contextlib.nullcontext([])
        error_text = None
        with capture as decoder_lines:
            try:
                with sf.SoundFile(str(path)) as stream:
                    rate, channels, frames, extra = stream.samplerate, stream.channels, stream.frames, stream.extra_info
                    if rate != self.sample_rate and not self.resample:
                        raise AudioDecodeError(path, "wrong_rate", f"{rate} Hz, expected {self.sample_rate} Hz")
                    first = int(round(start_s * rate))
                    if frames > 0 and first >= frames:
                        raise AudioDecodeError(path, "wrong_length", f"start {start_s:g} s is past the end of the "
                                                                     f"file ({frames / rate:.2f} s)")
                    wanted = frames - first if duration_s is None else min(int(round(duration_s * rate)),
                                                                             frames - first)
                    stream.seek(first)
                    if keep_frames is None:
                        data = stream.read(max(wanted, 0), dtype="float32", always_2d=True)
                        decoded = len(data)
                    else:
                        data = stream.read(frames=keep_frames, dtype="float32", always_2d=True,
                                           out=self._buffer(int(keep_frames), channels))
                        decoded = len(data)
                        if decoded == keep_frames:  # longer than kept: count the rest without keeping it
                            while True:
                                block = stream.read(frames=_READ_BLOCK, dtype="float32", always_2d=True)
                                if not len(block):
                                    break
                                decoded += len(block)
            except AudioDecodeError:
                raise
            except (RuntimeError, OSError, ValueError) as error:  # LibsndfileError is a RuntimeError
                error_text = error
        if error_text is not None:
            raise AudioDecodeError(path, "decode_error", _reason(error_text, decoder_lines))
        if self.strict:
            self._check_complete(path, frames, data, wanted, rate, extra, decoder_lines)
        if channels > 1:
            mono = data.mean(axis=1, dtype=np.float32)
        else:
            mono = data[:, 0]
        if self.strict and not np.isfinite(mono).all():
            raise AudioDecodeError(path, "decode_error", "the decoded audio contains NaN or infinite samples",
                                   decoded)
        if rate != self.sample_rate:
            import torch
            import torchaudio

            mono = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(mono)), rate,
                                                  self.sample_rate).numpy()
        if keep_frames is None:
            mono = np.ascontiguousarray(mono, dtype=np.float32)
        return DecodedAudio(mono, self.sample_rate, rate, channels, frames, first, decoded)

    @staticmethod
    def _check_complete(path: Path, frames: int, data: np.ndarray, wanted: int, rate: int, extra: str,
                        decoder_lines: Sequence[str]) -> None:
        """Strict mode: the file delivered every sample it declares."""
        if frames <= 0 or len(data) == 0:
            raise AudioDecodeError(path, "wrong_length", "no audio samples in the file (empty or truncated)")
        if len(data) < wanted:
            raise AudioDecodeError(
                path, "wrong_length",
                f"truncated or corrupt: decoded {len(data)} of the {wanted} samples the file declares "
                f"({len(data) / rate:.2f} of {wanted / rate:.2f} s)"
                + (f" [decoder: {decoder_lines[0].strip()}]" if decoder_lines else ""), len(data))
        if _HEADER_MISMATCH.search(extra or ""):
            raise AudioDecodeError(path, "wrong_length",
                                   "truncated: the audio data is shorter than the file's header declares", len(data))


def decode_audio(path: str | Path, *, start_s: float = 0.0, duration_s: float | None = None,
                 sample_rate: int = SAMPLE_RATE) -> DecodedAudio:
    """Decode one file the way tagging does (any rate resampled, strict checks): `AudioDecoder().decode`."""
    return AudioDecoder(sample_rate).decode(path, start_s=start_s, duration_s=duration_s)
