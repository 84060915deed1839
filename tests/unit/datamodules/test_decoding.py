"""Tests of datamodules/decoding.py: the one decoder behind the waveform cache and tagging."""

import numpy as np
import pytest
import soundfile as sf

from datamodules.decoding import (
    DECODE_STATUSES,
    AudioDecodeError,
    AudioDecoder,
    check_audio_file,
    decode_audio,
)
from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError, DataError


def tone(seconds: float, rate: int, freqs=(440.0,)) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)


def decode_error(decoder: AudioDecoder, path, **kwargs) -> AudioDecodeError:
    with pytest.raises(AudioDecodeError) as caught:
        decoder.decode(path, **kwargs)
    assert isinstance(caught.value, DataError) and caught.value.status in DECODE_STATUSES
    assert str(caught.value) == f"{path}: {caught.value.detail}"  # one line naming the file
    return caught.value


def test_file_checks_give_one_status_and_message_each(tmp_path):
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "folder.mp3").mkdir()
    (tmp_path / "garbage.mp3").write_bytes(np.random.default_rng(0).bytes(4000))
    for decoder in (AudioDecoder(), AudioDecoder(resample=False, strict=False)):
        assert decode_error(decoder, tmp_path / "none.mp3").detail == "no such file"
        assert decode_error(decoder, tmp_path / "folder.mp3").detail == "not a regular file"
        error = decode_error(decoder, tmp_path / "empty.mp3")
        assert (error.status, error.detail) == ("empty", "empty file (0 bytes)")
        error = decode_error(decoder, tmp_path / "garbage.mp3")
        assert error.status == "decode_error"
        assert error.detail.startswith("not a readable audio file")  # not libsndfile's "does not exist"
    with pytest.raises(AudioDecodeError, match="no such file"):
        check_audio_file(tmp_path / "none.mp3")
    assert check_audio_file(tmp_path / "garbage.mp3") == 4000


def test_samples_equal_soundfile_read_exactly(tmp_path):
    """The decoder seeks before reading, as soundfile.read does (a fresh read differs by 1 ulp on MP3)."""
    path = tmp_path / "clip.mp3"
    sf.write(path, tone(1.0, SAMPLE_RATE, (440.0, 660.0)), SAMPLE_RATE, format="MP3")
    reference, _ = sf.read(path, dtype="float32", always_2d=True)
    for decoder, kwargs in ((AudioDecoder(), {}), (AudioDecoder(resample=False, strict=False), {"keep_frames": 20_000})):
        audio = decoder.decode(path, **kwargs)
        assert audio.channels == 2 and audio.source_rate == audio.sample_rate == SAMPLE_RATE
        np.testing.assert_array_equal(audio.waveform, reference.mean(axis=1, dtype=np.float32))
        assert audio.decoded_frames == len(reference) and audio.waveform.dtype == np.float32


def test_other_rates_are_resampled_or_refused(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, tone(1.5, 22050), 22050)
    audio = decode_audio(path)
    assert (audio.source_rate, audio.sample_rate) == (22050, SAMPLE_RATE)
    assert abs(len(audio.waveform) - 24_000) <= 2
    error = decode_error(AudioDecoder(resample=False, strict=False), path)
    assert (error.status, error.detail) == ("wrong_rate", f"22050 Hz, expected {SAMPLE_RATE} Hz")


def test_excerpts(tmp_path):
    path = tmp_path / "ramp.wav"
    x = np.linspace(-0.5, 0.5, 3 * SAMPLE_RATE, dtype=np.float32)
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    audio = decode_audio(path, start_s=1.25, duration_s=0.5)
    np.testing.assert_array_equal(audio.waveform, x[20_000:28_000])
    assert audio.start_s == 1.25 and audio.source_seconds == 3.0
    assert len(decode_audio(path, start_s=2.0).waveform) == SAMPLE_RATE  # to the end
    assert decode_error(AudioDecoder(), path, start_s=3.0).detail.startswith("start 3 s is past the end")
    with pytest.raises(ConfigError):
        decode_audio(path, start_s=-1.0)
    with pytest.raises(ValueError):
        AudioDecoder().decode(path, duration_s=1.0, keep_frames=100)


def test_keep_frames_bounds_memory_and_counts_the_rest(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, tone(2.0, SAMPLE_RATE), SAMPLE_RATE)
    decoder = AudioDecoder(resample=False, strict=False)
    first = decoder.decode(path, keep_frames=1000)
    assert len(first.waveform) == 1000 and first.decoded_frames == 2 * SAMPLE_RATE
    buffer = first.waveform.base
    again = decoder.decode(path, keep_frames=1000)
    assert again.waveform.base is buffer  # the buffer is reused from call to call


def test_strict_decoding_refuses_truncated_files_lenient_decoding_reports_their_length(tmp_path):
    good = tmp_path / "good.mp3"
    sf.write(good, tone(4.0, 22050, (440.0, 660.0)), 22050, format="MP3")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.mp3"
    truncated.write_bytes(data[: len(data) // 2])
    error = decode_error(AudioDecoder(), truncated)
    assert error.status == "wrong_length" and "truncated" in error.detail and "decoded" in error.detail
    audio = AudioDecoder(sample_rate=22050, resample=False, strict=False).decode(truncated, keep_frames=10 ** 6)
    assert 0 < audio.decoded_frames < 4 * 22050  # short, without an error: the caller judges the length
    wav = tmp_path / "good.wav"
    sf.write(wav, tone(1.0, 22050), 22050)
    (tmp_path / "truncated.wav").write_bytes(wav.read_bytes()[:20_000])
    assert "truncated" in decode_error(AudioDecoder(), tmp_path / "truncated.wav").detail


def test_non_finite_samples_are_refused_when_strict(tmp_path):
    path = tmp_path / "nan.wav"
    x = np.zeros(1000, dtype=np.float32)
    x[10] = np.nan
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    assert "NaN" in decode_error(AudioDecoder(), path).detail
