"""Harmonic CNN (Won, Chun, Nieto, Serra 2020, ICASSP: "Data-driven harmonic filters for audio
representation learning"), in the configuration Won et al. evaluate on MTAT (SMC 2020: 0.9127
ROC-AUC / 0.4611 PR-AUC, `--tags standard --split clean`).

The network reads raw waveform chunks of 5 s (80,000 samples at 16 kHz) and computes its own
front-end on the batch's device:

1. STFT power spectrum: n_fft 512, hop 256 (torchaudio's default hop of n_fft // 2), periodic Hann
   window, centred frames with reflect padding: 257 bins x (samples // 256 + 1) frames.
2. Harmonic filter bank: triangular band-pass filters whose centres are ``n_harmonics`` (6)
   multiples of ``n_bands`` (128) base frequencies spaced ``1 / semitone_scale`` (half a)
   semitone apart from C1 (MIDI 24) up to the note nearest sample_rate / (2 * n_harmonics)
   (1,333 Hz -> E6, MIDI 88), so every harmonic stays below the Nyquist frequency. A filter
   centred at f has the equivalent-rectangular-bandwidth-like width (0.1079 f + 24.7) / Q and
   reaches zero at f +- width / 2; Q (initially 1) is learned (the authors' "only_Q" setting).
3. dB (10 log10 of the filtered power, floored at 1e-10), giving a (6, 128, frames) image whose
   channels are the harmonics: a 3x3 conv then sees a note's partials in one place.

The front-end runs in float32 with autocast off, like the suite's Mel frontend: the power
spectrum of loud audio overflows float16 (platform-facts.md). Its filters are rebuilt from Q on
every forward pass (they are a function of one parameter); the centre frequencies and FFT bin
frequencies are non-persistent buffers, so checkpoints hold Q and nothing derived.

Back-end (the authors' code, minzwon/sota-music-tagging-models `training/model.py`, written
anew): batch norm over the 6 harmonic channels; conv block (w, pool 2); 3 residual+pool blocks
(w, pool 2); conv block (2w, pool 2); 2 residual+pool blocks (2w, pool (2, 3)); max over the
remaining positions; dense 2w + BN + ReLU + dropout 0.5 + dense to the tags; w = 128. At
80,000 samples the 313 frames reduce to 156, 78, 39, 19, 9, 3, 1 and the 128 bands to 1.
Returns logits (no sigmoid).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError
from lightning_modules.networks.args import check_dropout, check_int
from lightning_modules.networks.base import WaveformNetwork
from lightning_modules.networks.blocks2d import ConvBlock, DenseHead, GlobalMaxPool, PooledResBlock, pooled_size

CHUNK_SAMPLES = 80_000
"""The authors' Harmonic CNN input: 5 s at 16 kHz."""

BW_ALPHA, BW_BETA = 0.1079, 24.7
"""Bandwidth (Hz) of a filter centred at f: (BW_ALPHA * f + BW_BETA) / Q (an ERB-like law)."""

LOWEST_MIDI = 24
"""C1, the lowest base frequency (32.7 Hz)."""

DB_AMIN = 1e-10
"""Floor on the filtered power before taking decibels (-100 dB)."""


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def hz_to_nearest_midi(hz: float) -> int:
    return int(round(12.0 * math.log2(hz / 440.0) + 69.0))


def base_frequencies(sample_rate: int, n_harmonics: int, semitone_scale: int) -> list[float]:
    """Base (first-harmonic) centre frequencies: ``semitone_scale`` per semitone from C1 up to
    (excluding) the note nearest ``sample_rate / (2 * n_harmonics)``."""
    high = hz_to_nearest_midi(sample_rate / (2 * n_harmonics))
    levels = (high - LOWEST_MIDI) * semitone_scale
    if levels < 1:
        raise ConfigError(f"harmonic_cnn: {n_harmonics} harmonics at {sample_rate} Hz leave no base frequency "
                          f"above C1")
    return [midi_to_hz(LOWEST_MIDI + k / semitone_scale) for k in range(levels)]


class HarmonicFilterbank(nn.Module):
    """Waveform (batch, samples) -> harmonic dB spectrogram (batch, n_harmonics, n_bands, frames), fp32.

    Attributes: ``n_harmonics``, ``n_bands``, ``n_fft``, ``hop_length``, ``bandwidth_q`` (the
    learned Q, a 1-element parameter; a plain buffer when ``learn_bandwidth=False``).
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_fft: int = 512, hop_length: int | None = None,
                 n_harmonics: int = 6, semitone_scale: int = 2, learn_bandwidth: bool = True,
                 bandwidth_q: float = 1.0) -> None:
        super().__init__()
        for option, value in (("sample_rate", sample_rate), ("n_fft", n_fft), ("n_harmonics", n_harmonics),
                              ("semitone_scale", semitone_scale)):
            check_int("harmonic_cnn", option, value)
        hop_length = n_fft // 2 if hop_length is None else hop_length
        check_int("harmonic_cnn", "hop_length", hop_length)
        if not (isinstance(bandwidth_q, (int, float)) and bandwidth_q > 0):
            raise ConfigError(f"harmonic_cnn: bandwidth_q must be a positive number, got {bandwidth_q!r}")
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.n_harmonics = n_harmonics
        base = base_frequencies(sample_rate, n_harmonics, semitone_scale)
        self.n_bands = len(base)
        centres = torch.tensor([f * h for h in range(1, n_harmonics + 1) for f in base], dtype=torch.float32)
        self.register_buffer("centres", centres, persistent=False)  # harmonic-major: (h1 bands, h2 bands, ...)
        bins = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
        self.register_buffer("bin_hz", bins, persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        q = torch.tensor([float(bandwidth_q)], dtype=torch.float32)
        if learn_bandwidth:
            self.bandwidth_q = nn.Parameter(q)
        else:
            self.register_buffer("bandwidth_q", q)

    def filters(self) -> torch.Tensor:
        """(n_fft // 2 + 1, n_harmonics * n_bands) triangular filters for the current Q (float32)."""
        q = self.bandwidth_q.float().clamp(min=1e-3)  # a width stays positive whatever the optimiser does
        width = (BW_ALPHA * self.centres + BW_BETA) / q
        distance = (self.bin_hz[:, None] - self.centres[None, :]).abs()
        return torch.relu(1.0 - 2.0 * distance / width[None, :])

    def n_frames(self, n_samples: int) -> int:
        return n_samples // self.hop_length + 1

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"HarmonicFilterbank expects (batch, samples), got {tuple(waveform.shape)}")
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            spec = torch.stft(waveform.float(), self.n_fft, hop_length=self.hop_length, window=self.window,
                              center=True, pad_mode="reflect", return_complex=True)
            power = spec.real.square() + spec.imag.square()          # (B, bins, T)
            banded = torch.matmul(power.transpose(1, 2), self.filters()).transpose(1, 2)  # (B, H*F, T)
            db = 10.0 * torch.log10(banded.clamp(min=DB_AMIN))
        b, _, t = db.shape
        return db.reshape(b, self.n_harmonics, self.n_bands, t)

    def extra_repr(self) -> str:
        return (f"n_fft={self.n_fft}, hop_length={self.hop_length}, n_harmonics={self.n_harmonics}, "
                f"n_bands={self.n_bands}, learn_bandwidth={isinstance(self.bandwidth_q, nn.Parameter)}")


class HarmonicCNN(WaveformNetwork):
    """Harmonic CNN: waveform (batch, n_samples) -> tag logits (batch, n_tags).

    Layers: ``frontend`` (`HarmonicFilterbank`), ``input_bn``, ``blocks`` (seven, see the module
    doc), ``pool`` (global max), ``head``. Raises ConfigError when the chunk is too short for
    the blocks' time pooling (at the defaults: fewer than 288 frames, i.e. 73,472 samples) or
    the bands too few for the frequency pooling.

    Attributes: ``n_samples``, ``n_tags``, ``input_shape`` ((n_samples,)), ``feature_sizes``.
    """

    POOLS = ((2, 2), (2, 2), (2, 2), (2, 2), (2, 2), (2, 3), (2, 3))
    WIDTHS = (1, 1, 1, 1, 2, 2, 2)
    RESIDUAL = (False, True, True, True, False, True, True)

    def __init__(self, n_samples: int, n_tags: int, channels: int = 128, n_fft: int = 512,
                 n_harmonics: int = 6, semitone_scale: int = 2, learn_bandwidth: bool = True,
                 dropout: float = 0.5, sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__()
        for option, value in (("n_samples", n_samples), ("n_tags", n_tags), ("channels", channels)):
            check_int("harmonic_cnn", option, value)
        check_dropout("harmonic_cnn", dropout)
        self.n_samples, self.n_tags = n_samples, n_tags
        self.frontend = HarmonicFilterbank(sample_rate, n_fft, None, n_harmonics, semitone_scale, learn_bandwidth)
        if n_samples <= n_fft // 2:
            raise ConfigError(f"harmonic_cnn: chunks of {n_samples} samples are too short for the STFT "
                              f"(n_fft {n_fft} with reflect padding needs more than {n_fft // 2})")
        bands, frames = self.frontend.n_bands, self.frontend.n_frames(n_samples)
        sizes = []
        for pool_f, pool_t in self.POOLS:
            bands, frames = pooled_size(bands, pool_f), pooled_size(frames, pool_t)
            sizes.append((bands, frames))
        if sizes[-1][0] < 1 or sizes[-1][1] < 1:
            need_frames = math.prod(p[1] for p in self.POOLS)
            need_bands = math.prod(p[0] for p in self.POOLS)
            raise ConfigError(
                f"harmonic_cnn: chunks of {n_samples} samples give {self.frontend.n_frames(n_samples)} frames x "
                f"{self.frontend.n_bands} bands; the blocks need at least {need_frames} frames "
                f"({(need_frames - 1) * self.frontend.hop_length} samples) and {need_bands} bands")
        self.feature_sizes: tuple[tuple[int, int], ...] = tuple(sizes)

        self.input_bn = nn.BatchNorm2d(n_harmonics)
        blocks = []
        in_channels = n_harmonics
        for pool, width, residual in zip(self.POOLS, self.WIDTHS, self.RESIDUAL):
            out_channels = channels * width
            blocks.append(PooledResBlock(in_channels, out_channels, pool) if residual
                          else ConvBlock(in_channels, out_channels, pool))
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = GlobalMaxPool()
        self.head = DenseHead(in_channels, n_tags, dropout)

    def paper_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """Layers in forward order for `--summary`, as (display name, module) pairs."""
        f = self.frontend
        yield f"harmonic filters ({f.n_harmonics} x {f.n_bands}, STFT {f.n_fft}/{f.hop_length}, learned Q)", f
        yield "input batch norm", self.input_bn
        for block, residual in zip(self.blocks, self.RESIDUAL):
            kind = "res block + maxpool" if residual else "conv 3x3 + maxpool"
            width = block.conv1.out_channels if residual else block.conv.out_channels
            pool = "x".join(str(p) for p in block.pool_size)
            yield f"{kind} {pool} - {width}", block
        yield "global max pool", self.pool
        yield f"dense {self.head.dense.out_features} + BN + dropout {self.head.dropout.p:g} + dense {self.n_tags}", \
            self.head.layers()

    @property
    def tag_layer(self) -> nn.Linear:
        return self.head.classifier

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """The head's dense layer after BN and ReLU (batch, 2 * channels) for a waveform batch."""
        x = self.input_bn(self.frontend(waveform))
        return self.head.embed(self.pool(self.blocks(x)))

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.head.classify(embedding)
