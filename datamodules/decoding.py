"""One audio decoder for the whole suite: a file in, mono audio at 16 kHz out, or one clear error.

Every user of audio files goes through `AudioDecoder`: the waveform store (`datamodules.store`:
MTAT's clips as fixed-length rows, thousands per second across workers, and MTG-Jamendo's
full-length tracks, streamed in blocks) and tagging (`--tag`, a user's files of any format, rate
and length). They share the decoding through soundfile (MP3, WAV, FLAC, OGG/Vorbis/Opus, AIFF,
...; no FFmpeg), the statuses (`DECODE_STATUSES`), the error type and the conversion to the
store's int16 (`float_to_int16`); they differ in policy, chosen per decoder:

* ``resample``: tagging resamples any rate to 16 kHz (torchaudio); the store keeps the file's own
  samples, so a file at another rate is an error (status ``wrong_rate``).
* ``strict``: tagging takes a user's file as it declares itself: fewer samples decoded than the
  file declares (a truncated MP3 decodes without error but short), a WAV whose data is shorter
  than its header says, no samples at all, or NaN/infinite samples are errors, and what
  libmpg123 prints on stderr from C while decoding is captured and shown only as part of such an
  error. The fixed-length store judges a clip's length itself (it accepts a small tolerance around
  the expected clip length, whatever the header declares) and leaves the decoder's messages on stderr.
* ``shortfall`` (tagging's tolerant mode, `TAGGING_SHORTFALL`): real files are imperfect (a
  misplaced Ogg page, a cut-off last MP3 frame) and players still play them, so a strict decoder
  with a shortfall accepts a file that delivers a little less than it declares (at most that
  fraction of its length, and at least `LENGTH_TOLERANCE` frames), zero-pads what is missing and
  reports it (`AudioPlan.shortfall_frames`), so tagging can tag what decodes and say so. The
  fixed-length store keeps its exact check.
* ``keep_frames`` (per call): bounded memory for a file of unknown true length: at most this many
  frames are kept, in a buffer the decoder reuses from call to call (a fresh clip-sized buffer per
  file costs page faults and zeroing comparable to a third of an MP3 decode); the frames after
  them are decoded and counted only.

`AudioDecoder.decode` returns a whole file (or an excerpt) as float32; `AudioDecoder.plan` and
`AudioDecoder.read_span` read any span of it, in bounded memory, giving exactly the samples a whole
decode gives there (to float rounding; tagging reads long files in spans); `AudioDecoder.blocks` streams a
file of any length as int16 blocks at the decoder's rate, resampled block by block with
``scipy.signal.resample_poly`` (what the ragged store keeps), so memory holds one block whatever
the length.

The decoder always seeks to its start frame before reading, as ``soundfile.read`` does: after a
seek libsndfile's MP3 path returns values that differ by 1 ulp from a read of a freshly opened
file, so seeking every time makes every reader of a file (store, tagging, ``soundfile.read``)
get the same samples.

Errors are `AudioDecodeError` (a `DataError`, so run.py prints it as one line): its ``status`` is
one of `DECODE_STATUSES` (the store records it per row), its ``detail`` the reason without the
path, and its message ``"<path>: <detail>"``. Options that cannot work (a negative start) raise
`ConfigError`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from infrastructure.audio import INT16_SCALE, SAMPLE_RATE
from infrastructure.errors import ConfigError, DataError

DECODE_STATUSES = ("missing", "empty", "decode_error", "wrong_length", "wrong_rate", "truncated")
"""Why a file could not be used, the one vocabulary of the suite (the store adds ``pending`` and ``ok``,
`datamodules.store.format.STATUSES`): no such (regular) file; a zero-byte file, or one without
samples; the decoder refused it (or it holds NaN/inf); a length other than declared or expected
(a fixed-length row off by more than `LENGTH_TOLERANCE`); a rate other than the decoder's
(without resampling); a stream that ends more than `LENGTH_TOLERANCE` frames before the length
its header announces (`AudioDecoder.blocks`: a cut-off MP3 decodes without error, only short)."""

LENGTH_TOLERANCE = 1152
"""Frames a decoded file may differ from the length expected of it: two MPEG-2 layer III frames
(576 samples each at 16 kHz)."""

TAGGING_SHORTFALL = 0.01
"""Tagging's tolerance (``AudioDecoder(shortfall=...)``): a file may deliver up to this fraction of its declared
length less than it declares (at least `LENGTH_TOLERANCE` frames) and still be tagged, with a note; a file cut
by more (half an MP3) is still an error."""

DEFAULT_BLOCK_SAMPLES = 30 * SAMPLE_RATE
"""Output samples `AudioDecoder.blocks` yields per block (30 s: 0.96 MB of int16)."""

SAMPLE_DTYPE = np.dtype("<i2")
"""The store's samples: little-endian int16 (`float_to_int16`)."""

_READ_BLOCK = 1 << 16
_HEADER_MISMATCH = re.compile(r"^\s*data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


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


@dataclass(frozen=True)
class AudioPlan:
    """What `AudioDecoder.read_span` reads: one file's excerpt, as the file declares it (small and picklable: a
    worker process reads spans of a plan another process made).

    Attributes:
        path: the file.
        source_rate / channels: the file's rate (Hz) and channel count (mixed down to mono by averaging).
        source_frames: frames the file declares.
        first_frame / frames: the excerpt, in source frames.
        sample_rate: the decoder's rate.
        samples: the excerpt's length at ``sample_rate`` (what a whole decode of it gives).
        header_missing_frames: frames a WAV's header declares beyond its data (accepted within the
            decoder's ``shortfall``; 0 for other files).
    """

    path: Path
    source_rate: int
    channels: int
    source_frames: int
    first_frame: int
    frames: int
    sample_rate: int
    samples: int
    header_missing_frames: int = 0

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    @property
    def start_s(self) -> float:
        return self.first_frame / self.source_rate


@dataclass
class SpanRead:
    """Samples of a span (float32 mono at the decoder's rate, zeros past what decoded), and ``decoded_end``: the
    excerpt's source frame where decoding stopped short of what the file declares (None: it did not)."""

    samples: np.ndarray
    decoded_end: int | None


def float_to_int16(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Map float audio in [-1, 1] to int16 the way the store keeps it (round(x * 32768), clipped).

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


def readable_reason(text: str) -> str:
    """A decoding failure's text as a user can act on it: libsndfile's text for unrecognised data is misleading
    ("File does not exist or is not a regular file")."""
    if "does not exist or is not a regular file" in text or "Format not recognised" in text:
        return "not a readable audio file (unknown format or corrupt data)"
    return text


def _reason(error: Exception, decoder_lines: Sequence[str]) -> str:
    text = readable_reason(str(error))
    if decoder_lines:
        text += f" [decoder: {decoder_lines[0].strip()}]"
    return text


class AudioDecoder:
    """Decodes audio files to mono float32 at ``sample_rate`` (see the module docstring for the policies).

    Args:
        sample_rate: rate of the decoded samples (Hz).
        resample: resample files at other rates (torchaudio); False: they raise status ``wrong_rate``.
        strict: check the decoded audio against what the file declares, and capture the C
            decoder's stderr into the errors (tagging); False leaves the length to the caller (the
            fixed-length store).
        shortfall: with ``strict``, the fraction of its declared length a file read through `plan` /
            `read_span` may fall short and still be accepted (`finish` says by how much); 0: none.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, *, resample: bool = True, strict: bool = True,
                 shortfall: float = 0.0):
        self.sample_rate, self.resample, self.strict = int(sample_rate), resample, strict
        self.shortfall = float(shortfall)
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
            mono = resample(mono, rate, self.sample_rate)
        if keep_frames is None:
            mono = np.ascontiguousarray(mono, dtype=np.float32)
        return DecodedAudio(mono, self.sample_rate, rate, channels, frames, first, decoded)

    def blocks(self, path: str | Path, *, excerpt_samples: int | None = None,
               block_samples: int = DEFAULT_BLOCK_SAMPLES) -> Iterator[np.ndarray]:
        """Yield the file at ``path`` as mono int16 blocks at the decoder's rate (only its middle
        ``excerpt_samples`` when given and shorter than the file): what the ragged store keeps.

        Resampling (any rate, whatever ``resample`` says) is `scipy.signal.resample_poly` by ``up/down =
        sample_rate/source_rate``. A block covers whole groups of ``up`` output samples, i.e. source frames
        at multiples of ``down``, where the polyphase filter of a whole-file call is aligned the same way;
        each block is resampled with enough source frames on either side for the filter's support (its
        ``10 * max(up, down)`` taps at the upsampled rate), so the blocks join into what one call on the
        whole file gives, to float rounding. Memory: one block and its margins, whatever the file's
        length. An excerpt is read by seeking (sample-exact in libsndfile), never decoding the rest.
        The checks are the store's own (not `check_audio_file`'s), as the store's index records them.

        Raises:
            AudioDecodeError: status ``missing`` or ``empty`` (a zero-byte file, or no frames), or
                ``truncated`` (the stream ends more than `LENGTH_TOLERANCE` frames early).
            RuntimeError: libsndfile refused the file (the store records ``decode_error`` with its text).
        """
        try:
            size = os.stat(path).st_size
        except OSError:
            raise AudioDecodeError(path, "missing", "no such file") from None
        if size == 0:
            raise AudioDecodeError(path, "empty", "zero-byte file")
        with sf.SoundFile(str(path)) as handle:
            source_rate, frames = handle.samplerate, handle.frames
            if frames <= 0:
                raise AudioDecodeError(path, "empty", "no audio frames")
            ratio = Fraction(self.sample_rate, source_rate)
            up, down = ratio.numerator, ratio.denominator
            total = -(-frames * up // down)  # resample_poly's output length: ceil(frames * up / down)
            start, stop = _middle(total, excerpt_samples)
            # Margin, in groups of `down` source frames, covering the filter's half-length.
            margin = 0 if up == down == 1 else math.ceil(10 * max(up, down) / up / down) + 1
            step = max(up, (block_samples // up) * up)
            position = start
            while position < stop:
                end = min(stop, (position // up) * up + step)
                first_group = max(0, position // up - margin)
                last_group = -(-end // up) + margin
                src_start = first_group * down
                src_stop = min(frames, last_group * down)
                handle.seek(src_start)
                data = handle.read(frames=src_stop - src_start, dtype="float32", always_2d=True)
                if len(data) < src_stop - src_start - LENGTH_TOLERANCE:
                    raise AudioDecodeError(path, "truncated", f"decoded {src_start + len(data)} of {frames} frames")
                mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
                if up != down:
                    from scipy.signal import resample_poly  # imported only when needed: ~1-4 s here

                    mono = resample_poly(mono, up, down).astype(np.float32, copy=False)
                offset = first_group * up
                piece = mono[position - offset:end - offset]
                if len(piece) < end - position:  # short read within the tolerance: pad the last block
                    piece = np.concatenate([piece, np.zeros(end - position - len(piece), np.float32)])
                yield float_to_int16(np.ascontiguousarray(piece, dtype=np.float32))
                position = end

    # ---- spans: any part of a file, in bounded memory (tagging) -------------------------------------------------
    def plan(self, path: str | Path, *, start_s: float = 0.0, duration_s: float | None = None) -> AudioPlan:
        """Open ``path`` and describe its excerpt (default: the whole file) without decoding it.

        Raises:
            AudioDecodeError: the file is missing, empty, unreadable, without samples, at another rate (without
                resampling), starts past ``start_s``, or (strict) its WAV data is shorter than its header says by
                more than the ``shortfall`` allows.
            ConfigError: a negative start or a non-positive duration.
        """
        path = Path(path)
        check_audio_file(path)
        if start_s < 0 or (duration_s is not None and duration_s <= 0):
            raise ConfigError(f"start must be >= 0 and duration > 0 seconds (got {start_s}, {duration_s})")
        error_text = None
        with captured_c_stderr() if self.strict else contextlib.nullcontext([]) as decoder_lines:
            try:
                with sf.SoundFile(str(path)) as stream:
                    rate, channels, frames, extra = (stream.samplerate, stream.channels, stream.frames,
                                                     stream.extra_info)
            except (RuntimeError, OSError, ValueError) as error:
                error_text = error
        if error_text is not None:
            raise AudioDecodeError(path, "decode_error", _reason(error_text, decoder_lines))
        if rate != self.sample_rate and not self.resample:
            raise AudioDecodeError(path, "wrong_rate", f"{rate} Hz, expected {self.sample_rate} Hz")
        if frames <= 0:
            raise AudioDecodeError(path, "wrong_length", "no audio samples in the file (empty or truncated)")
        first = int(round(start_s * rate))
        if first >= frames:
            raise AudioDecodeError(path, "wrong_length", f"start {start_s:g} s is past the end of the file "
                                                         f"({frames / rate:.2f} s)")
        wanted = frames - first if duration_s is None else min(int(round(duration_s * rate)), frames - first)
        missing = 0
        mismatch = _HEADER_MISMATCH.search(extra or "") if self.strict else None
        if mismatch:
            declared, present = int(mismatch.group(1)), int(mismatch.group(2))  # "data : HEADER (should be FOUND)"
            missing = int(round(frames * (declared - present) / max(present, 1)))
            if missing > self._tolerated(frames + missing):
                raise AudioDecodeError(path, "wrong_length",
                                       "truncated: the audio data is shorter than the file's header declares")
        return AudioPlan(path, rate, channels, frames, first, wanted, self.sample_rate,
                         resampled_length(wanted, rate, self.sample_rate), missing)

    def read_span(self, plan: AudioPlan, start: int, stop: int) -> SpanRead:
        """Samples ``[start, stop)`` of the plan's excerpt at the decoder's rate: float32 mono, what a whole decode
        of the excerpt gives there (to float rounding), zeros past its end or past what decodes.

        Only the source frames the span needs are read (plus the resampling filter's margin), so memory follows
        the span, not the file. A file that decodes short is not an error here: `SpanRead.decoded_end` says
        where it stopped, and `finish` judges the whole file.

        Raises:
            AudioDecodeError: libsndfile refused the file, or (strict) it decoded NaN or infinite samples.
        """
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop:
            raise ValueError(f"a span [{start}, {stop}) must start at 0 or later and not end before it starts")
        ends: list[int] = []
        capture = captured_c_stderr() if self.strict else contextlib.nullcontext([])
        error_text = None
        with capture as decoder_lines:
            try:
                with sf.SoundFile(str(plan.path)) as stream:
                    def source(a: int, b: int) -> np.ndarray:
                        """Excerpt frames [a, b) mixed to mono; zeros outside the excerpt and past what decodes."""
                        out = np.zeros(b - a, dtype=np.float32)
                        lo, hi = max(a, 0), min(b, plan.frames)
                        if hi > lo:
                            stream.seek(plan.first_frame + lo)
                            data = stream.read(hi - lo, dtype="float32", always_2d=True)
                            if len(data) < hi - lo:
                                ends.append(lo + len(data))
                            out[lo - a:lo - a + len(data)] = (data.mean(axis=1, dtype=np.float32)
                                                              if data.shape[1] > 1 else data[:, 0])
                        return out

                    samples = _span(source, plan.source_rate, self.sample_rate, start, min(stop, plan.samples))
            except (RuntimeError, OSError, ValueError) as error:
                error_text = error
        if error_text is not None:
            raise AudioDecodeError(plan.path, "decode_error", _reason(error_text, decoder_lines))
        if self.strict and not np.isfinite(samples).all():
            raise AudioDecodeError(plan.path, "decode_error", "the decoded audio contains NaN or infinite samples")
        if len(samples) < stop - start:
            samples = np.concatenate([samples, np.zeros(stop - start - len(samples), np.float32)])
        return SpanRead(samples, min(ends) if ends else None)

    def finish(self, plan: AudioPlan, decoded_end: int | None) -> int:
        """Source frames the excerpt fell short of what the file declares (0: none), once its spans are read;
        ``decoded_end``: the least `SpanRead.decoded_end` of them (None: none stopped short).

        Raises:
            AudioDecodeError: strict, and the shortfall exceeds the decoder's ``shortfall`` (or nothing decoded).
        """
        missing = plan.header_missing_frames + (0 if decoded_end is None else plan.frames - decoded_end)
        if not self.strict or missing == 0:
            return missing
        if decoded_end == 0:
            raise AudioDecodeError(plan.path, "wrong_length", "no audio samples in the file (empty or truncated)")
        declared = plan.frames + plan.header_missing_frames
        if missing > self._tolerated(declared):
            got = declared - missing
            raise AudioDecodeError(
                plan.path, "wrong_length",
                f"truncated or corrupt: decoded {got} of the {declared} samples the file declares "
                f"({got / plan.source_rate:.2f} of {declared / plan.source_rate:.2f} s)", got)
        return missing

    def _tolerated(self, declared_frames: int) -> int:
        """Frames a file of ``declared_frames`` may fall short under this decoder's ``shortfall`` (0: none)."""
        if self.shortfall <= 0:
            return 0
        return max(LENGTH_TOLERANCE, int(self.shortfall * declared_frames))

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


# ---- resampling: torchaudio's windowed-sinc filter, for a whole signal or any span of it ---------------------------
@functools.lru_cache(maxsize=16)
def _sinc_filter(source_rate: int, rate: int):
    """(kernel (new, 1, 2 width + orig) float32, width, orig, new): torchaudio's resampling filter from
    ``source_rate`` to ``rate`` (rates divided by their gcd), as `torchaudio.transforms.Resample` builds it."""
    import torchaudio

    transform = torchaudio.transforms.Resample(source_rate, rate)
    return transform.kernel, int(transform.width), source_rate // transform.gcd, rate // transform.gcd


def resampled_length(frames: int, source_rate: int, rate: int) -> int:
    """Samples at ``rate`` of ``frames`` source frames: torchaudio's ceil(frames x rate / source_rate)."""
    if source_rate == rate:
        return int(frames)
    g = math.gcd(source_rate, rate)
    return -(-int(frames) * (rate // g) // (source_rate // g))


def _span(source, source_rate: int, rate: int, start: int, stop: int) -> np.ndarray:
    """Output samples [start, stop) of a signal resampled from ``source_rate`` to ``rate``, where ``source(a, b)``
    gives its source frames [a, b) (zeros outside the signal).

    torchaudio's filter maps each group of ``orig`` source frames (frames g orig ... (g + 1) orig) to a group of
    ``new`` output samples, reading ``width`` frames on either side; a span reads the groups it covers with those
    margins, so it equals the same samples of a whole-signal `resample` (to float rounding).
    """
    if stop <= start:
        return np.zeros(0, dtype=np.float32)
    if source_rate == rate:
        return source(start, stop)
    import torch

    kernel, width, orig, new = _sinc_filter(source_rate, rate)
    first, last = start // new, -(-stop // new)
    block = torch.from_numpy(source(first * orig - width, last * orig + width))
    out = torch.nn.functional.conv1d(block[None, None], kernel, stride=orig)  # (1, new, groups)
    out = out[0].transpose(0, 1).reshape(-1).numpy()
    return np.ascontiguousarray(out[start - first * new:stop - first * new], dtype=np.float32)


def resample(mono: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    """A whole mono float32 signal resampled from ``source_rate`` to ``rate`` (`_span` over all of it)."""
    mono = np.ascontiguousarray(mono, dtype=np.float32)

    def source(a: int, b: int) -> np.ndarray:
        out = np.zeros(b - a, dtype=np.float32)
        lo, hi = max(a, 0), min(b, len(mono))
        if hi > lo:
            out[lo - a:hi - a] = mono[lo:hi]
        return out

    return _span(source, source_rate, rate, 0, resampled_length(len(mono), source_rate, rate))


def _middle(total: int, excerpt_samples: int | None) -> tuple[int, int]:
    """The samples kept of ``total``: all, or the middle ``excerpt_samples``."""
    if excerpt_samples is None or total <= excerpt_samples:
        return 0, total
    start = (total - excerpt_samples) // 2
    return start, start + excerpt_samples


def decode_audio(path: str | Path, *, start_s: float = 0.0, duration_s: float | None = None,
                 sample_rate: int = SAMPLE_RATE) -> DecodedAudio:
    """Decode one file the way tagging does (any rate resampled, strict checks): `AudioDecoder().decode`."""
    return AudioDecoder(sample_rate).decode(path, start_s=start_s, duration_s=duration_s)
