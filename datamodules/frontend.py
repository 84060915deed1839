"""The input frontend: log-Mel spectrograms computed on the batch's device, or raw waveforms.

The frontend is defined once and used in two places: during training (the DataModule calls it in
``on_after_batch_transfer``, so the Mel transform runs on the accelerator) and when tagging new
audio from a checkpoint. Its settings travel as `MelConfig.to_dict()`; the module itself has an
empty ``state_dict()`` (its STFT kernels and Mel filters are rebuilt from the settings), so
checkpoints stay small and do not depend on the backend that computed the features.

What lives here
---------------
* `MelConfig`: the Mel settings (defaults: the paper's 2D CNN input, FFT 2048, hop 1792, 128 Mel
  bands at 16 kHz, i.e. 261 frames for a 465,984-sample clip) and the amplitude compression.
* `LogMel`: (B, n_samples) waveform -> (B, n_mels, n_frames) float32 compressed Mel power,
  backed by nnAudio or torchaudio with identical settings (Slaney Mel scale and area
  normalisation, power 2, periodic Hann window, centred frames with reflect padding; the two
  backends agree with an independent librosa reference: tests/test_frontend.py checks it,
  docs/data.md gives the measured agreement).
* `WaveformFrontend`: the identity for raw-waveform models (returns float32).
* `build_frontend(config)`: the one place that picks between them.

Numerics: the power spectrum of loud audio overflows float16 (inf, then NaN in the Mel matmul),
so `LogMel` always computes in float32 with autocast disabled, whatever the input dtype or the
surrounding autocast context.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from datamodules.audio import SAMPLE_RATE
from datamodules.errors import ConfigError

BACKENDS = ("nnaudio", "torchaudio")
"""Libraries `LogMel` can compute the Mel power spectrogram with."""

COMPRESSIONS = ("db", "log1p", "none")
"""Amplitude compressions applied to the Mel power (see `MelConfig`)."""

DB_AMIN = 1e-10
"""Floor on the Mel power before taking decibels: 10*log10(1e-10) = -100 dB."""

LOG1P_SCALE = 10_000.0
"""C in log(1 + C * power): Dieleman & Schrauwen (2014)'s compression for end-to-end tagging."""


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
        backend: ``"nnaudio"`` or ``"torchaudio"`` (the same spectrogram; docs/benchmarks.md
            compares their speed).

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


def _make_buffers_non_persistent(module: nn.Module) -> None:
    """Re-register every buffer of ``module`` and its children as non-persistent.

    The buffers stay on the module (they follow ``.to(device)``) but leave ``state_dict()``:
    nnAudio's STFT kernels alone are 17 MB at n_fft 2048, and they are a pure function of the
    settings, which the checkpoint carries anyway.
    """
    for sub in module.modules():
        for name, buffer in list(sub.named_buffers(recurse=False)):
            sub.register_buffer(name, buffer, persistent=False)


class LogMel(nn.Module):
    """Compressed Mel spectrogram of a batch of waveforms, computed in float32.

    ``forward(waveform)`` maps a (B, n_samples) tensor of any float dtype to a
    (B, n_mels, config.n_frames(n_samples)) float32 tensor. Autocast is disabled inside, so the
    output is finite for full-scale audio even under a float16/bfloat16 autocast context.

    The module has no parameters and an empty ``state_dict()``: the Mel filters and (nnAudio) STFT
    kernels are non-persistent buffers rebuilt from ``config``.

    Raises (forward):
        ValueError: if the input is not 2-D.
        ConfigError: if the input is too short for the reflect padding (<= n_fft // 2 samples).
    """

    def __init__(self, config: MelConfig) -> None:
        super().__init__()
        self.config = config
        if config.backend == "nnaudio":
            from nnAudio import features

            self.mel = features.MelSpectrogram(
                sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                hop_length=config.hop_length, window="hann", center=True, pad_mode="reflect",
                power=2.0, htk=False, fmin=config.f_min, fmax=config.max_frequency, norm=1,
                trainable_mel=False, trainable_STFT=False, verbose=False,
            )
        else:
            import torchaudio

            self.mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
                f_min=config.f_min, f_max=config.max_frequency, n_mels=config.n_mels,
                window_fn=torch.hann_window, power=2.0, normalized=False, center=True,
                pad_mode="reflect", norm="slaney", mel_scale="slaney",
            )
        _make_buffers_non_persistent(self)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.ndim != 2:
            raise ValueError(f"LogMel expects a (batch, samples) waveform, got shape {tuple(waveform.shape)}")
        n_samples = waveform.shape[-1]
        if n_samples < self.config.min_samples:
            raise ConfigError(
                f"input of {n_samples} samples is too short for the Mel frontend: n_fft="
                f"{self.config.n_fft} with reflect padding needs at least {self.config.min_samples} "
                f"samples (more than n_fft // 2 = {self.config.n_fft // 2})"
            )
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            power = self.mel(waveform.to(torch.float32))
            compression = self.config.compression
            if compression == "db":
                out = 10.0 * torch.log10(torch.clamp(power, min=DB_AMIN))
            elif compression == "log1p":
                out = torch.log1p(LOG1P_SCALE * power)
            else:
                out = power
        return out.to(torch.float32)

    def extra_repr(self) -> str:
        c = self.config
        return (f"backend={c.backend}, n_fft={c.n_fft}, hop_length={c.hop_length}, n_mels={c.n_mels}, "
                f"f_min={c.f_min}, f_max={c.max_frequency:g}, compression={c.compression}")


class WaveformFrontend(nn.Module):
    """The frontend of raw-waveform models: returns the (B, n_samples) input as float32."""

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.ndim != 2:
            raise ValueError(
                f"WaveformFrontend expects a (batch, samples) waveform, got shape {tuple(waveform.shape)}"
            )
        return waveform.to(torch.float32)


def build_frontend(config: MelConfig | None) -> nn.Module:
    """The frontend for ``config``: a `LogMel`, or a `WaveformFrontend` when ``config`` is None."""
    if config is None:
        return WaveformFrontend()
    if not isinstance(config, MelConfig):
        raise ConfigError(f"frontend settings must be a MelConfig or None, got {type(config).__name__}")
    return LogMel(config)
