"""Tests of the ragged layout of datamodules/store/ (and of the decoder's blocks): contents, resampling in blocks,
excerpts, skipped tracks, resumption after a kill (simulated in-process and a real SIGKILL), bounded memory."""

import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from datamodules.decoding import AudioDecodeError, AudioDecoder, float_to_int16
from datamodules.store.format import INDEX_FILE, JOURNAL_FILE, MANIFEST_FILE, PARTIAL_DIR, WAVEFORMS_FILE
from datamodules.store.ragged import write_ragged_store
from datamodules.store.reader import open_store
from infrastructure.errors import ConfigError, DataError
from tests.support.paths import REPO_ROOT
from tests.support.ragged_items import ITEMS, generated_decoder


def tone(n, rate, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.05 * rng.standard_normal(n)
    x = x.astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def write_wav(path, x, rate):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate, subtype="FLOAT")
    return str(path)


def test_store_holds_tracks_of_different_lengths_and_skips_bad_ones(tmp_path):
    audio = tmp_path / "audio"
    lengths = [16000, 40000, 7, 23456]
    items = [(f"t{i}", write_wav(audio / f"{i}.wav", tone(n, 16000, seed=i), 16000)) for i, n in enumerate(lengths)]
    (audio / "empty.wav").write_bytes(b"")
    (audio / "garbage.wav").write_bytes(b"not audio at all" * 10)
    items[2:2] = [("gone", str(audio / "missing.wav")), ("empty", str(audio / "empty.wav")),
                  ("garbage", str(audio / "garbage.wav"))]
    with pytest.warns(UserWarning, match=r"3 of 7 tracks skipped.*gone \(missing.*empty \(empty.*garbage \(decode_error"):
        store = write_ragged_store(tmp_path / "store", items)
    assert [e.status for e in store.index] == ["ok", "ok", "missing", "empty", "decode_error", "ok", "ok"]
    assert store.lengths.tolist() == [16000, 40000, 0, 0, 0, 7, 23456]
    assert store.ok_rows.tolist() == [0, 1, 5, 6]
    assert (tmp_path / "store" / WAVEFORMS_FILE).stat().st_size == 2 * sum(lengths)
    for row, (key, path) in enumerate(items):
        if store.index[row].status == "ok":
            expected = float_to_int16(sf.read(path, dtype="float32")[0])
            assert np.array_equal(store.track(row), expected), key
    assert store.segment(1, 39990, 20)[10:].tolist() == [0] * 10
    assert np.array_equal(store.segment(1, 100, 50), store.track(1)[100:150])
    assert store.keys[4] == "garbage" and "Error" in store.index[4].detail
    assert not (tmp_path / "store" / PARTIAL_DIR).exists()
    # A second call with the same inputs reuses the store without rewriting it.
    mtime = (tmp_path / "store" / MANIFEST_FILE).stat().st_mtime_ns
    with _no_warning():  # the store is reused: no decoding, no warning
        again = write_ragged_store(tmp_path / "store", items)
    assert (tmp_path / "store" / MANIFEST_FILE).stat().st_mtime_ns == mtime
    assert again.lengths.tolist() == store.lengths.tolist()
    # Changing an input file rebuilds.
    write_wav(audio / "0.wav", tone(8000, 16000, seed=9), 16000)
    with pytest.warns(UserWarning, match="3 of 7 tracks skipped"):
        rebuilt = write_ragged_store(tmp_path / "store", items)
    assert rebuilt.lengths[0] == 8000


class _no_warning:
    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


@pytest.mark.parametrize("rate, channels", [(44100, 2), (48000, 1), (22050, 1)])
def test_block_resampling_equals_whole_track_resampling(tmp_path, rate, channels):
    x = tone(int(rate * 3.3) + 17, rate, channels)
    path = write_wav(tmp_path / "x.wav", x, rate)
    mono = x.mean(axis=1, dtype=np.float32) if channels == 2 else x
    g = np.gcd(16000, rate)
    whole = float_to_int16(resample_poly(mono, 16000 // g, rate // g).astype(np.float32))
    blocks = list(AudioDecoder().blocks(path, block_samples=4000))
    assert len(blocks) > 10
    joined = np.concatenate(blocks)
    assert len(joined) == len(whole) == -(-len(x) * 16000 // rate)
    assert np.abs(joined.astype(np.int32) - whole).max() <= 1
    # The middle 1 s, read by seeking, is the same part of the whole track.
    excerpt = np.concatenate(list(AudioDecoder().blocks(path, excerpt_samples=16000, block_samples=5000)))
    start = (len(whole) - 16000) // 2
    assert len(excerpt) == 16000
    assert np.abs(excerpt.astype(np.int32) - whole[start:start + 16000]).max() <= 1
    # An excerpt longer than the track keeps the whole track.
    assert len(np.concatenate(list(AudioDecoder().blocks(path, excerpt_samples=10**7)))) == len(whole)


def test_parallel_decoding_writes_the_same_store_byte_for_byte(tmp_path):
    lengths = [30000, 0, 47000, 9000, 61000, 12000]
    items = []
    for i, n in enumerate(lengths):
        if n:
            items.append((f"t{i}", write_wav(tmp_path / f"{i}.wav", tone(n, 22050, channels=1 + i % 2, seed=i), 22050)))
        else:
            items.append((f"t{i}", str(tmp_path / "missing.wav")))
    serial = write_ragged_store(tmp_path / "serial", items, commit_bytes=50_000)
    parallel = write_ragged_store(tmp_path / "parallel", items, commit_bytes=50_000, workers=3)
    assert [e.status for e in parallel.index] == [e.status for e in serial.index] == ["ok", "missing"] + ["ok"] * 4
    for name in (WAVEFORMS_FILE, INDEX_FILE):
        assert (tmp_path / "parallel" / name).read_bytes() == (tmp_path / "serial" / name).read_bytes(), name
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        write_ragged_store(tmp_path / "x", items, workers=0)


def test_excerpt_store_keeps_the_middle(tmp_path):
    items = [(f"t{i}", write_wav(tmp_path / f"{i}.wav", tone(n, 16000, seed=i), 16000))
             for i, n in enumerate([50000, 9000])]
    store = write_ragged_store(tmp_path / "store", items, excerpt_samples=10000)
    assert store.lengths.tolist() == [10000, 9000]
    assert store.manifest["excerpt_samples"] == 10000
    full = float_to_int16(sf.read(items[0][1], dtype="float32")[0])
    assert np.array_equal(store.track(0), full[20000:30000])

    def too_long(path):
        yield np.zeros(20000, dtype=np.int16)

    with pytest.raises(DataError, match="more than excerpt_samples=10000"):
        write_ragged_store(tmp_path / "other", items, decoder=too_long, excerpt_samples=10000)


def test_truncated_mp3_is_skipped(tmp_path):
    path = tmp_path / "cut.mp3"
    sf.write(path, tone(16000 * 6, 16000), 16000, format="MP3")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioDecodeError) as info:
        list(AudioDecoder().blocks(str(path)))
    assert info.value.status == "truncated"


# ------------------------------------------------------------------------------------------------
# Resumption
# ------------------------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in the writer handles it."""


def test_resume_after_simulated_kill_is_byte_identical(tmp_path):
    with pytest.warns(UserWarning, match="1 of 61 tracks skipped"):
        reference = write_ragged_store(tmp_path / "ref", ITEMS, decoder=generated_decoder, commit_bytes=200_000)
    ref_bytes = {name: (tmp_path / "ref" / name).read_bytes() for name in (WAVEFORMS_FILE, INDEX_FILE, "offsets.npy")}

    calls = {"n": 0}
    commits = []

    def dying(path):
        calls["n"] += 1
        if calls["n"] == 45:  # mid-track, after several commits and with uncommitted rows pending
            yield np.full(777, 5, dtype=np.int16)
            raise Killed()
        yield from generated_decoder(path)

    target = tmp_path / "store"
    with pytest.raises(Killed):
        write_ragged_store(target, ITEMS, decoder=dying, commit_bytes=200_000, on_commit=commits.append)
    assert commits == [6, 8, 14, 16, 21, 23, 29, 31, 36, 39]  # rows 39-43 done but not committed
    partial = target / PARTIAL_DIR
    assert not (target / MANIFEST_FILE).exists()
    # What a kill during a commit leaves: bytes past the last commit and a torn journal line.
    with open(partial / WAVEFORMS_FILE, "ab") as handle:
        handle.write(b"\x13" * 5001)
    with open(partial / JOURNAL_FILE, "ab") as handle:
        handle.write(f"{commits[-1]}\tok\t12".encode())
    resumed_commits = []
    with pytest.warns(UserWarning, match="1 of 61 tracks skipped"):
        store = write_ragged_store(target, ITEMS, decoder=generated_decoder, commit_bytes=200_000,
                                   on_commit=resumed_commits.append)
    assert resumed_commits[0] > commits[-1]  # it continued, it did not start over
    for name, data in ref_bytes.items():
        assert (target / name).read_bytes() == data, name
    assert store.index == reference.index
    assert store.index[40].status == "decode_error" and store.lengths[40] == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_disk_stops_the_store_in_one_line_and_a_rerun_loses_nothing(tmp_path, monkeypatch, workers):
    from datamodules.store import ragged as ragged_store

    items = [(f"t{i}", write_wav(tmp_path / f"{i}.wav", tone(n, 16000, seed=i), 16000))
             for i, n in enumerate([9000, 12000, 7000, 15000])]
    reference = write_ragged_store(tmp_path / "ref", items, commit_bytes=1)
    real = ragged_store.pwrite_all

    def disk_full_at_the_third_track(fd, data, offset):
        if offset >= (9000 + 12000) * 2:  # bytes: int16 samples of the first two tracks
            raise OSError(28, "No space left on device")
        real(fd, data, offset)

    monkeypatch.setattr(ragged_store, "pwrite_all", disk_full_at_the_third_track)
    with pytest.raises(DataError, match=r"writing the samples of .*2\.wav failed .*No space left on device.*rerun"):
        write_ragged_store(tmp_path / "store", items, commit_bytes=1, workers=workers)
    monkeypatch.setattr(ragged_store, "pwrite_all", real)
    store = write_ragged_store(tmp_path / "store", items, commit_bytes=1, workers=workers)
    assert [e.status for e in store.index] == ["ok"] * 4  # not recorded as the track's decode error
    assert (tmp_path / "store" / WAVEFORMS_FILE).read_bytes() == (tmp_path / "ref" / WAVEFORMS_FILE).read_bytes()
    assert store.index == reference.index


def test_changed_inputs_start_partial_afresh(tmp_path):
    def dying(path):
        if path == ITEMS[10][1]:
            raise Killed()
        yield from generated_decoder(path)

    with pytest.raises(Killed):
        write_ragged_store(tmp_path / "s", ITEMS[:20], decoder=dying, commit_bytes=1)
    changed = ITEMS[:5] + [("k5", "999:1234")] + ITEMS[6:20]
    store = write_ragged_store(tmp_path / "s", changed, decoder=generated_decoder, commit_bytes=1)
    assert store.lengths[5] == 1234
    assert np.array_equal(store.track(5), np.concatenate(list(generated_decoder("999:1234"))))


def test_bad_options_and_unfinished_store(tmp_path):
    with pytest.raises(ConfigError, match="unique"):
        write_ragged_store(tmp_path / "s", [("a", "1:10"), ("a", "2:10")], decoder=generated_decoder)
    with pytest.raises(ConfigError, match="excerpt_samples"):
        write_ragged_store(tmp_path / "s", [("a", "1:10")], decoder=generated_decoder, excerpt_samples=0)
    with pytest.raises(DataError, match="not a complete waveform store"):
        open_store(tmp_path / "nothing")


_KILL_SCRIPT = """
import sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from datamodules.store.ragged import write_ragged_store
from tests.support.ragged_items import ITEMS, generated_decoder

def slow(path):
    time.sleep(0.02)
    yield from generated_decoder(path)

write_ragged_store({target!r}, ITEMS, decoder=slow, commit_bytes=150_000,
                   on_commit=lambda n: print(n, flush=True))
"""


@pytest.mark.slow
def test_resume_after_sigkill_is_byte_identical(tmp_path):
    with pytest.warns(UserWarning):
        write_ragged_store(tmp_path / "ref", ITEMS, decoder=generated_decoder, commit_bytes=150_000)
    target = tmp_path / "store"
    script = _KILL_SCRIPT.format(repo=str(REPO_ROOT), target=str(target))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    committed = 0
    while committed < 15:
        line = proc.stdout.readline()
        assert line, "writer ended before it could be killed"
        committed = int(line)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (target / MANIFEST_FILE).exists()
    with pytest.warns(UserWarning):
        write_ragged_store(target, ITEMS, decoder=generated_decoder, commit_bytes=150_000)
    for name in (WAVEFORMS_FILE, INDEX_FILE, "offsets.npy", MANIFEST_FILE):
        assert (target / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


# ------------------------------------------------------------------------------------------------
# Bounded memory
# ------------------------------------------------------------------------------------------------

def _peak_rss_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def test_memory_stays_bounded_while_writing_hundreds_of_megabytes(tmp_path):
    # 60 tracks of 2.5M samples (156 s at 16 kHz): 300 MB of int16 in all.
    items = [(f"t{i}", f"{i}:2500000") for i in range(60)]
    total_bytes = 60 * 2_500_000 * 2
    reset = False
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
        reset = True
    except OSError:
        pass
    rss_before = _peak_rss_kb()
    tracemalloc.start()
    try:
        store = write_ragged_store(tmp_path / "big", items, decoder=generated_decoder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_after = _peak_rss_kb()
    assert int(store.offsets[-1]) * 2 == total_bytes
    assert (tmp_path / "big" / WAVEFORMS_FILE).stat().st_size == total_bytes
    # One generated block is 100,000 samples (0.2 MB); a writer that kept tracks (5 MB each) or
    # the whole store would exceed these bounds by far.
    assert peak < 4e6, f"Python allocations peaked at {peak / 1e6:.1f} MB while writing {total_bytes / 1e6:.0f} MB"
    if reset and rss_before is not None and rss_after is not None:
        growth = (rss_after - rss_before) * 1024
        assert growth < 30e6, f"peak RSS grew by {growth / 1e6:.1f} MB while writing {total_bytes / 1e6:.0f} MB"
    assert np.array_equal(store.track(59)[:10], next(iter(generated_decoder("59:2500000")))[:10])


def test_decoding_a_long_track_keeps_one_block_in_memory(tmp_path):
    """The real decoder streams: a 4-minute 44.1 kHz track (42 MB of float32 source, 7.7 MB of
    int16 output) is decoded and resampled with memory for one 5 s block and its margins."""
    rate, seconds = 44100, 240
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="FLOAT") as handle:
        for minute in range(seconds // 60):  # written in pieces, so the test itself stays small
            handle.write(tone(rate * 60, rate, seed=minute))
    tracemalloc.start()
    try:
        store = write_ragged_store(tmp_path / "store", [("long", str(path))],
                                   decoder=lambda p: AudioDecoder().blocks(p, block_samples=5 * 16000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert store.lengths.tolist() == [seconds * 16000]
    assert peak < 8e6, f"decoding peaked at {peak / 1e6:.1f} MB of Python allocations"
