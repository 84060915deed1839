"""Tests of the log-Mel frontend (datamodules/frontend.py).

Tolerances, checked against a reference computed independently in float64 (numpy framing and
FFT with a periodic Hann window, Mel filters from librosa with Slaney scale and norm):
* Mel power: max |difference| <= 2e-5 of the peak Mel power (measured: 0.6e-6 to 2.6e-6);
* decibels: within 0.01 dB wherever the reference power is above 1e-6 of its peak (below that
  the float32 STFT's rounding noise dominates).
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import torch

from datamodules.frontend import LOG1P_SCALE, LogMel, WaveformFrontend, build_frontend
from datamodules.mel_config import BACKENDS, DB_AMIN, MelConfig
from infrastructure.audio import MTAT_CLIP_SAMPLES, SAMPLE_RATE
from infrastructure.errors import ConfigError

POWER_TOLERANCE = 2e-5
"""Max |Mel power difference| relative to the peak Mel power."""

DB_TOLERANCE = 0.01
"""Max dB difference where the reference power is above `DB_FLOOR` of its peak."""

DB_FLOOR = 1e-6


def reference_mel_power(x: np.ndarray, config: MelConfig) -> np.ndarray:
    """Mel power of each row of ``x`` (B, n) in float64, computed without nnAudio or torchaudio."""
    x = np.asarray(x, dtype=np.float64)
    pad = config.n_fft // 2
    padded = np.pad(x, ((0, 0), (pad, pad)), mode="reflect")
    n_frames = config.n_frames(x.shape[1])
    starts = np.arange(n_frames) * config.hop_length
    frames = padded[:, starts[:, None] + np.arange(config.n_fft)[None, :]]  # (B, T, n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(config.n_fft) / config.n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (B, T, F)
    filters = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                                  fmin=config.f_min, fmax=config.max_frequency, htk=False, norm="slaney")
    return np.einsum("mf,btf->bmt", filters.astype(np.float64), power)


def make_signal(n_samples: int, seed: int = 0) -> np.ndarray:
    """Two rows: white noise at 0.3 RMS, and a sum of sines plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SAMPLE_RATE
    noise = 0.3 * rng.standard_normal(n_samples)
    tones = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3150.5 * t)
             + 0.05 * np.sin(2 * np.pi * 97 * t) + 0.01 * rng.standard_normal(n_samples))
    return np.stack([noise, tones]).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_fft,hop,n_mels,f_min,f_max", [(2048, 1792, 128, 0.0, None),
                                                         (2048, 2560, 128, 0.0, None),  # hop > n_fft (paper's LSTM)
                                                         (512, 256, 96, 30.0, 7000.0)])
def test_power_matches_independent_reference(backend, n_fft, hop, n_mels, f_min, f_max):
    config = MelConfig(n_fft=n_fft, hop_length=hop, n_mels=n_mels, f_min=f_min, f_max=f_max,
                       compression="none", backend=backend)
    x = make_signal(20_000)
    got = LogMel(config)(torch.from_numpy(x)).numpy().astype(np.float64)
    want = reference_mel_power(x, config)
    assert got.shape == want.shape == (2, n_mels, config.n_frames(20_000))
    for row in range(2):
        peak = want[row].max()
        assert np.abs(got[row] - want[row]).max() <= POWER_TOLERANCE * peak


@pytest.mark.parametrize("backend", BACKENDS)
def test_db_matches_reference_where_power_is_meaningful(backend):
    config = MelConfig(n_fft=1024, hop_length=512, n_mels=64, compression="db", backend=backend)
    x = make_signal(12_000, seed=3)
    got = LogMel(config)(torch.from_numpy(x)).numpy()
    want_power = reference_mel_power(x, config)
    want_db = 10 * np.log10(np.maximum(want_power, DB_AMIN))
    for row in range(2):
        mask = want_power[row] > DB_FLOOR * want_power[row].max()
        assert mask.mean() > 0.5
        assert np.abs(got[row][mask] - want_db[row][mask]).max() <= DB_TOLERANCE


def test_backends_agree_and_compressions_are_the_documented_formulas():
    x = torch.from_numpy(make_signal(9_000, seed=5))
    power = {b: LogMel(MelConfig(n_fft=512, hop_length=128, n_mels=40, compression="none", backend=b))(x)
             for b in BACKENDS}
    peak = power["torchaudio"].max()
    assert (power["nnaudio"] - power["torchaudio"]).abs().max() <= POWER_TOLERANCE * peak
    p = power["torchaudio"]
    db = LogMel(MelConfig(n_fft=512, hop_length=128, n_mels=40, compression="db", backend="torchaudio"))(x)
    log1p = LogMel(MelConfig(n_fft=512, hop_length=128, n_mels=40, compression="log1p",
                             backend="torchaudio"))(x)
    torch.testing.assert_close(db, 10 * torch.log10(p.clamp(min=DB_AMIN)))
    torch.testing.assert_close(log1p, torch.log1p(LOG1P_SCALE * p))
    silence = LogMel(MelConfig(n_fft=512, hop_length=128, n_mels=40, backend="torchaudio"))(torch.zeros(1, 4000))
    assert torch.all(silence == 10 * math.log10(DB_AMIN))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_fft,hop,n_samples,frames", [(2048, 1792, MTAT_CLIP_SAMPLES, 261),
                                                        (2048, 512, 115_712, 227)])
def test_output_shapes(backend, n_fft, hop, n_samples, frames):
    config = MelConfig(n_fft=n_fft, hop_length=hop, n_mels=128, backend=backend)
    assert config.n_frames(n_samples) == frames
    out = LogMel(config)(torch.zeros(1, n_samples).uniform_(-0.5, 0.5))
    assert out.shape == (1, 128, frames)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dict_holds_no_kernels(backend):
    frontend = LogMel(MelConfig(backend=backend))
    assert frontend.state_dict() == {}
    assert list(frontend.parameters()) == []
    # The kernels are still there as buffers, so they follow the module to a device/dtype.
    names = {name for name, _ in frontend.named_buffers()}
    assert names, "the Mel filters must still be buffers"
    total_bytes = sum(b.numel() * b.element_size() for b in frontend.buffers())
    if backend == "nnaudio":
        assert total_bytes > 16_000_000  # the 17 MB of STFT kernels that must stay out of checkpoints
    # Loading an empty state dict into a fresh frontend works (what a checkpoint restore does).
    LogMel(MelConfig(backend=backend)).load_state_dict(frontend.state_dict(), strict=True)
    wrapper = torch.nn.Sequential(frontend, torch.nn.Identity())
    assert wrapper.state_dict() == {}


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_scale_audio_is_finite_under_reduced_precision(backend):
    config = MelConfig(backend=backend)
    frontend = LogMel(config)
    t = torch.arange(48_000) / SAMPLE_RATE
    square = torch.sign(torch.sin(2 * math.pi * 220 * t))  # full scale: +-1
    square[square == 0] = 1.0
    x = square.repeat(2, 1)
    reference = frontend(x)
    assert torch.isfinite(reference).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_bf16 = frontend(x)
    assert under_bf16.dtype == torch.float32
    # Autocast is disabled inside: the result is the float32 result, bit for bit.
    assert torch.equal(under_bf16, reference)
    with torch.autocast("cpu", dtype=torch.float16):
        under_fp16 = frontend(x)
    assert torch.isfinite(under_fp16).all()
    assert torch.equal(under_fp16, reference)
    from_half = frontend(x.to(torch.float16))
    assert from_half.dtype == torch.float32
    assert torch.isfinite(from_half).all()
    torch.testing.assert_close(from_half, reference)  # +-1 is exact in float16


def test_float16_power_would_overflow_without_the_fp32_guard():
    """Shows why the guard exists: the same power spectrum in float16 is not finite."""
    t = torch.arange(4096) / SAMPLE_RATE
    x = torch.sign(torch.sin(2 * math.pi * 220 * t))
    spectrum = torch.fft.rfft(x[:2048] * torch.hann_window(2048)).abs()
    assert not torch.isfinite(spectrum.to(torch.float16) ** 2).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_input_raises_config_error_naming_lengths(backend):
    frontend = LogMel(MelConfig(n_fft=2048, hop_length=512, backend=backend))
    with pytest.raises(ConfigError, match=r"1024 samples.*n_fft=2048.*1025"):
        frontend(torch.zeros(2, 1024))
    assert frontend(torch.zeros(2, 1025)).shape == (2, 128, 3)
    with pytest.raises(ValueError):
        frontend(torch.zeros(2, 1, 5000))


@pytest.mark.parametrize("backend", BACKENDS)
def test_construction_prints_nothing(backend, capsys):
    LogMel(MelConfig(backend=backend))
    build_frontend(MelConfig(n_fft=512, hop_length=256, n_mels=96, backend=backend))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_config_round_trip_and_defaults():
    default = MelConfig()
    assert (default.sample_rate, default.n_fft, default.hop_length, default.n_mels) == (SAMPLE_RATE, 2048, 1792, 128)
    assert default.max_frequency == 8000.0
    assert default.compression == "db" and default.backend == "nnaudio"
    custom = MelConfig(n_fft=512, hop_length=256, n_mels=96, f_min=20.0, f_max=7600.0,
                       compression="log1p", backend="torchaudio")
    for config in (default, custom):
        d = config.to_dict()
        assert set(d) == {"sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max",
                          "compression", "backend"}
        assert MelConfig.from_dict(d) == config
        import json

        assert MelConfig.from_dict(json.loads(json.dumps(d))) == config
    assert MelConfig.from_dict({"n_fft": 1024}) == MelConfig(n_fft=1024)


@pytest.mark.parametrize("kwargs,message", [
    ({"n_fft": 0}, "n_fft"),
    ({"n_fft": -2048}, "n_fft"),
    ({"hop_length": 0}, "hop_length"),
    ({"n_mels": 0}, "n_mels"),
    ({"sample_rate": 0}, "sample_rate"),
    ({"n_fft": 2048.0}, "n_fft"),
    ({"f_max": 8000.5}, "Nyquist"),
    ({"f_min": 4000.0, "f_max": 4000.0}, "f_min"),
    ({"f_min": 9000.0}, "f_min"),
    ({"f_min": -1.0}, "f_min"),
    ({"compression": "log"}, "compression"),
    ({"backend": "librosa"}, "backend"),
])
def test_bad_configs_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        MelConfig(**kwargs)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="'hop'"):
        MelConfig.from_dict({"hop": 512})
    with pytest.raises(ConfigError):
        MelConfig.from_dict({"n_fft": "2048"})


def test_build_frontend_and_waveform_identity():
    wave = build_frontend(None)
    assert isinstance(wave, WaveformFrontend)
    x = torch.linspace(-1, 1, 3000, dtype=torch.float64).reshape(2, 1500)
    out = wave(x)
    assert out.dtype == torch.float32 and out.shape == (2, 1500)
    torch.testing.assert_close(out, x.float())
    assert wave.state_dict() == {}
    mel = build_frontend(MelConfig(n_fft=512, hop_length=256, n_mels=32, backend="torchaudio"))
    assert isinstance(mel, LogMel)
    assert mel(torch.zeros(3, 2560)).shape == (3, 32, 11)
    with pytest.raises(ConfigError):
        build_frontend({"n_fft": 512})
