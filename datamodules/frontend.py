"""The input frontend: log-Mel spectrograms computed on the batch's device, or raw waveforms.

The frontend is defined once and used in two places: during training (the DataModule calls it in
``on_after_batch_transfer``, so the Mel transform runs on the accelerator) and when tagging new
audio from a checkpoint. Its settings travel as `MelConfig.to_dict()`; the module itself has an
empty ``state_dict()`` (its STFT kernels and Mel filters are rebuilt from the settings), so
checkpoints stay small and do not depend on the backend that computed the features.

What lives here
---------------
* `MelConfig` (defined in `datamodules/mel_config.py`, which imports no torch; importable from
  here too): the Mel settings (defaults: the paper's 2D CNN input, FFT 2048, hop 1792, 128 Mel
  bands at 16 kHz, i.e. 261 frames for a 465,984-sample clip) and the amplitude compression.
* `LogMel`: (B, n_samples) waveform -> (B, n_mels, n_frames) float32 compressed Mel power,
  backed by nnAudio or torchaudio with identical settings (Slaney Mel scale and area
  normalisation, power 2, periodic Hann window, centred frames with reflect padding; the two
  backends agree with an independent librosa reference: tests/unit/datamodules/test_frontend.py checks it,
  docs/data.md gives the measured agreement).
* `WaveformFrontend`: the identity for raw-waveform models (returns float32).
* `build_frontend(config)`: the one place that picks between them.

Numerics: the power spectrum of loud audio overflows float16 (inf, then NaN in the Mel matmul),
so `LogMel` always computes in float32 with autocast disabled, whatever the input dtype or the
surrounding autocast context.
"""

from __future__ import annotations

import torch
from torch import nn

from datamodules.mel_config import DB_AMIN, MelConfig
from infrastructure.errors import ConfigError

LOG1P_SCALE = 10_000.0
"""C in log(1 + C * power): Dieleman & Schrauwen (2014)'s compression for end-to-end tagging."""


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
