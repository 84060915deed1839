"""The Mel settings (`MelConfig`) and the names the frontend accepts, without torch.

The model registry, the command line and the option docs read these; importing them must not
import torch (`run.py --help` and its errors stay fast). The frontend that computes the Mel
(`datamodules/frontend.py`) imports them from here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError

BACKENDS = ("nnaudio", "torchaudio")
"""Libraries `LogMel` can compute the Mel power spectrogram with."""

COMPRESSIONS = ("db", "log1p", "none")
"""Amplitude compressions applied to the Mel power (see `MelConfig`)."""

DB_AMIN = 1e-10
"""Floor on the Mel power before taking decibels: 10*log10(1e-10) = -100 dB."""


@dataclass(frozen=True)
class MelConfig:
    """Settings of the log-Mel frontend.

    Attributes:
        sample_rate: sample rate of the waveforms (Hz); MTAT is 16 kHz.
        n_fft: FFT (and Hann window) length in samples.
        hop_length: hop between frames in samples (may exceed n_fft: frames then skip audio).
        n_mels: number of Mel bands.
        f_min: lowest Mel filter edge (Hz).
        f_max: highest Mel filter edge (Hz); None means sample_rate / 2.
        compression: applied to the Mel power P:
            ``"db"``: 10 * log10(max(P, 1e-10)) (no reference scaling, no top_db clipping);
            ``"log1p"``: log(1 + 10000 * P), a compression that stays finite and near-linear for
            silence (used by Dieleman & Schrauwen 2014 for end-to-end tagging);
            ``"none"``: P itself.
        backend: ``"nnaudio"`` or ``"torchaudio"`` (the same spectrogram; the README's
            Benchmarks section compares their speed).

    Raises:
        ConfigError: on construction, for a non-positive sample rate, n_fft, hop_length or
            n_mels, a negative f_min, f_max above sample_rate / 2, f_min >= f_max, or an
            unknown backend or compression.
    """

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 2048
    hop_length: int = 1792
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None
    compression: str = "db"
    backend: str = "nnaudio"

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"Mel setting {name} must be a positive integer, got {value!r}")
        for name in ("f_min", "f_max"):
            value = getattr(self, name)
            if value is None and name == "f_max":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"Mel setting {name} must be a finite number of Hz, got {value!r}")
        nyquist = self.sample_rate / 2
        if self.f_min < 0:
            raise ConfigError(f"Mel setting f_min must be >= 0 Hz, got {self.f_min}")
        if self.f_max is not None and self.f_max > nyquist:
            raise ConfigError(
                f"Mel setting f_max={self.f_max} Hz is above the Nyquist frequency "
                f"{nyquist:g} Hz of sample_rate={self.sample_rate}"
            )
        if self.f_min >= self.max_frequency:
            raise ConfigError(
                f"Mel setting f_min={self.f_min} Hz must be below f_max={self.max_frequency:g} Hz"
            )
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"unknown Mel compression {self.compression!r}; choose one of: {', '.join(COMPRESSIONS)}"
            )
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown Mel backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")

    @property
    def max_frequency(self) -> float:
        """The upper Mel filter edge in Hz (f_max, or sample_rate / 2 when f_max is None)."""
        return float(self.sample_rate / 2 if self.f_max is None else self.f_max)

    @property
    def min_samples(self) -> int:
        """Shortest input (samples) the centred, reflect-padded STFT accepts: n_fft // 2 + 1."""
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` samples with centred framing: n_samples // hop + 1."""
        return n_samples // self.hop_length + 1

    def to_dict(self) -> dict:
        """All settings as a plain, JSON-serialisable dict (the inverse of `from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MelConfig:
        """Build from a dict as written by `to_dict`; missing keys take their defaults.

        Raises:
            ConfigError: for keys that are not Mel settings, or invalid values.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"Mel settings must be a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown Mel setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
            )
        return cls(**d)
