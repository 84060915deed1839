"""Tests of the fixed-length layout of datamodules/store/: statuses, exact contents, resumption after SIGKILL,
atomic finish, rebuild on changed inputs, lazy reopening in other processes, bounded memory.

The dataset is a few tiny generated MP3s (1 s at 16 kHz, clip_samples=16000).
"""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from datamodules.decoding import LENGTH_TOLERANCE, float_to_int16
from datamodules.store import fixed as cache
from datamodules.store.fixed import prepare_cache
from datamodules.store.reader import open_store
from infrastructure import workers
from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError, DataError
from tests.support.paths import REPO_ROOT

CLIP = SAMPLE_RATE  # 1 s

# (name, kind, expected status, expected decoded_samples)
LAYOUT = [
    ("0/tone_a.mp3", "mono", "ok", CLIP),
    ("0/missing.mp3", "missing", "missing", 0),
    ("1/zero_bytes.mp3", "empty", "empty", 0),
    ("1/garbage.mp3", "garbage", "decode_error", 0),
    ("2/tone_b.mp3", "mono", "ok", CLIP),
    ("2/half.mp3", "short", "wrong_length", CLIP // 2),
    ("3/slightly_short.mp3", "slightly_short", "ok", CLIP - 500),
    ("3/slightly_long.mp3", "slightly_long", "ok", CLIP + LENGTH_TOLERANCE),
    ("4/too_long.mp3", "too_long", "wrong_length", CLIP + 2 * LENGTH_TOLERANCE),
    ("4/stereo.mp3", "stereo", "ok", CLIP),
    ("5/rate22050.mp3", "wrong_rate", "wrong_rate", 0),
] + [(f"{'6789abcdef'[i % 10]}/tone_{i}.mp3", "mono", "ok", CLIP) for i in range(10)]


def _noise(seed: int, n: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 0.2 * np.sin(np.arange(n) * (0.01 + 0.003 * seed)) + 0.05 * rng.standard_normal(n)
    if channels == 2:
        return np.stack([x, 0.5 * x[::-1]], axis=1).astype(np.float32)
    return x.astype(np.float32)


def make_dataset(root: Path) -> tuple[list[str], list[int]]:
    """Write the MP3s of LAYOUT under root; return (mp3_paths, clip_ids)."""
    lengths = {"mono": CLIP, "short": CLIP // 2, "slightly_short": CLIP - 500,
               "slightly_long": CLIP + LENGTH_TOLERANCE, "too_long": CLIP + 2 * LENGTH_TOLERANCE}
    for seed, (rel, kind, _, _) in enumerate(LAYOUT):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind in lengths:
            sf.write(path, _noise(seed, lengths[kind]), SAMPLE_RATE, format="MP3")
        elif kind == "stereo":
            sf.write(path, _noise(seed, CLIP, channels=2), SAMPLE_RATE, format="MP3")
        elif kind == "wrong_rate":
            sf.write(path, _noise(seed, CLIP), 22_050, format="MP3")
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "garbage":
            path.write_bytes(b"this is not an mp3 file " * 40)
    return [rel for rel, *_ in LAYOUT], [1000 + i for i in range(len(LAYOUT))]


def expected_row(path: Path) -> np.ndarray:
    """Decode an MP3 directly, the reference the cache rows must equal."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == SAMPLE_RATE
    mono = data.mean(axis=1)
    out = np.zeros(CLIP, dtype=np.int16)
    out[: min(CLIP, len(mono))] = float_to_int16(mono[:CLIP])
    return out


def prepare_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_cache(*args, **kwargs)


def journaled(folder: Path) -> np.ndarray:
    """Per row: whether the journal of the preparation in ``folder`` records it (complete lines only)."""
    done = np.zeros(len(LAYOUT), dtype=bool)
    journal = folder / "partial" / "journal.tsv"
    if journal.exists():
        for line in journal.read_text().split("\n")[:-1]:
            done[int(line.split("\t")[0])] = True
    return done


def cache_bytes(folder: Path) -> tuple[bytes, bytes]:
    return (folder / "waveforms.int16").read_bytes(), (folder / "index.csv").read_bytes()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    paths, ids = make_dataset(root)
    return root, paths, ids


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """A cache built uninterrupted, in this process, plus the warnings it emitted."""
    root, paths, ids = dataset
    folder = tmp_path_factory.mktemp("reference") / "cache"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_cache(root, paths, ids, folder, CLIP, workers=1, progress=False, chunk_rows=4)
    return folder, [w for w in caught if issubclass(w.category, UserWarning)]


def test_statuses_and_decoded_lengths(reference):
    folder, _ = reference
    c = open_store(folder)
    assert list(c.index["status"]) == [status for _, _, status, _ in LAYOUT]
    assert list(c.index["decoded_samples"]) == [n for *_, n in LAYOUT]
    assert list(c.index["mp3_path"]) == [rel for rel, *_ in LAYOUT]
    assert list(c.index["clip_id"]) == [1000 + i for i in range(len(LAYOUT))]
    assert list(c.index.columns) == ["row", "clip_id", "mp3_path", "status", "decoded_samples"]
    ok = [i for i, (_, _, status, _) in enumerate(LAYOUT) if status == "ok"]
    assert c.ok_rows.tolist() == ok and c.ok_rows.dtype == np.int64
    assert c.manifest["n_ok"] == len(ok) and c.manifest["n_rows"] == len(LAYOUT)
    assert c.manifest["clip_samples"] == CLIP and c.manifest["sample_rate"] == SAMPLE_RATE
    assert c.waveforms.shape == (len(LAYOUT), CLIP) and c.waveforms.dtype == np.int16
    assert (folder / "waveforms.int16").stat().st_size == len(LAYOUT) * CLIP * 2


def test_one_warning_lists_every_skipped_clip(reference):
    _, caught = reference
    assert len(caught) == 1
    text = str(caught[0].message)
    skipped = [(rel, status) for rel, _, status, _ in LAYOUT if status != "ok"]
    assert f"{len(skipped)} of {len(LAYOUT)} clips" in text
    for rel, status in skipped:
        assert f"{rel} ({status})" in text


def test_rows_equal_direct_decoding(dataset, reference):
    root, paths, _ = dataset
    c = open_store(reference[0])
    for row, (rel, _kind, status, _) in enumerate(LAYOUT):
        if status == "ok":
            np.testing.assert_array_equal(c.waveforms[row], expected_row(root / rel), err_msg=rel)
            direct, _ = sf.read(root / rel, dtype="float32", always_2d=True)
            n = min(CLIP, len(direct))
            np.testing.assert_allclose(c.read(row)[:n], direct[:n].mean(axis=1), atol=1 / 32768 + 1e-7)
        else:
            assert not c.waveforms[row].any(), f"failed row {rel} must be zero-filled"
            with pytest.raises(DataError, match="not servable"):
                c.read(row)
    # padding / trimming within the tolerance
    short = [i for i, x in enumerate(LAYOUT) if x[1] == "slightly_short"][0]
    assert not c.waveforms[short, CLIP - 500:].any()
    # stereo is averaged to mono
    stereo = [i for i, x in enumerate(LAYOUT) if x[1] == "stereo"][0]
    data, _ = sf.read(root / LAYOUT[stereo][0], dtype="float32")
    assert data.shape[1] == 2
    np.testing.assert_array_equal(c.waveforms[stereo], float_to_int16(data.mean(axis=1)))
    # read() serves a window, scaled to [-1, 1)
    window = c.read(0, start=100, length=50)
    assert window.dtype == np.float32 and window.shape == (50,)
    np.testing.assert_array_equal(window, c.waveforms[0, 100:150] / np.float32(32768))
    with pytest.raises(ValueError):
        c.read(0, start=CLIP - 10, length=20)


def test_parallel_workers_give_identical_bytes(dataset, reference, tmp_path):
    root, paths, ids = dataset
    prepare_quietly(root, paths, ids, tmp_path / "c", CLIP, workers=2, progress=False, chunk_rows=3)
    assert cache_bytes(tmp_path / "c") == cache_bytes(reference[0])
    assert not (tmp_path / "c" / "partial").exists()


def test_prepared_cache_is_reused_without_work(dataset, reference, monkeypatch):
    root, paths, ids = dataset
    before = {p.name: p.stat().st_mtime_ns for p in reference[0].iterdir()}

    def fail(*args, **kwargs):
        raise AssertionError("a complete cache must not be decoded again")

    monkeypatch.setattr(cache, "_process_chunk", fail)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning either
        assert prepare_cache(root, paths, ids, reference[0], CLIP, workers=1, progress=False) == reference[0]
    assert {p.name: p.stat().st_mtime_ns for p in reference[0].iterdir()} == before


def test_chunks_respect_chunk_rows_and_persist_progress(dataset, tmp_path, monkeypatch):
    root, paths, ids = dataset
    seen = []
    original = cache._process_chunk
    folder = tmp_path / "c"

    def spy(audio_root, waveforms_path, clip_samples, rows, mp3_paths):
        seen.append((list(rows), int(journaled(folder).sum())))
        return original(audio_root, waveforms_path, clip_samples, rows, mp3_paths)

    monkeypatch.setattr(cache, "_process_chunk", spy)
    prepare_quietly(root, paths, ids, folder, CLIP, workers=1, progress=False, chunk_rows=5)
    assert [rows for rows, _ in seen] == [list(range(s, min(s + 5, len(LAYOUT)))) for s in range(0, len(LAYOUT), 5)]
    # progress was persisted after every chunk, before the next one started
    assert [done for _, done in seen] == [5 * k for k in range(len(seen))]


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    sys.path.insert(0, {repo!r})
    from datamodules.store.fixed import prepare_cache
    if __name__ == "__main__":
        warnings.simplefilter("ignore")
        prepare_cache({root!r}, {paths!r}, {ids!r}, {folder!r}, {clip}, workers={workers},
                      progress=False, chunk_rows=3)
    """
)


def _run_and_kill(dataset, folder: Path, workers: int, extra_wait: float) -> None:
    """Start a preparation in a subprocess and SIGKILL its whole process group mid-way."""
    root, paths, ids = dataset
    script = KILL_SCRIPT.format(repo=str(REPO_ROOT), root=str(root), paths=paths, ids=ids,
                                folder=str(folder), clip=CLIP, workers=workers)
    env = dict(os.environ, **{cache.ROW_DELAY_ENV: "0.08"})
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while not journaled(folder).any():
            assert proc.poll() is None, "preparation ended before it could be killed"
            assert time.monotonic() < deadline, "no row was journaled"
            time.sleep(0.01)
        time.sleep(extra_wait)  # land in the middle of a later chunk
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = int(journaled(folder).sum())
    assert 0 < done < len(LAYOUT), f"kill was not mid-way ({done} rows done)"


@pytest.mark.parametrize("workers, extra_wait", [(1, 0.13), (2, 0.3)])
def test_sigkill_then_rerun_is_byte_identical(dataset, reference, tmp_path, monkeypatch, workers, extra_wait):
    folder = tmp_path / "cache"
    _run_and_kill(dataset, folder, workers, extra_wait)
    assert not (folder / "manifest.json").exists()
    with pytest.raises(DataError, match="interrupted preparation"):
        open_store(folder)
    root, paths, ids = dataset
    done_at_kill = journaled(folder)
    processed = []
    original = cache._process_chunk

    def spy(audio_root, waveforms_path, clip_samples, rows, mp3_paths):
        processed.extend(rows)
        return original(audio_root, waveforms_path, clip_samples, rows, mp3_paths)

    if workers == 1:  # a spawned pool would have to pickle the spy
        monkeypatch.setattr(cache, "_process_chunk", spy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_cache(root, paths, ids, folder, CLIP, workers=workers, progress=False, chunk_rows=3)
    if workers == 1:  # the rerun decodes exactly the chunks not finished before the kill
        unfinished = [r for r in range(len(LAYOUT)) if not done_at_kill[r - r % 3: r - r % 3 + 3].all()]
        assert processed == unfinished and len(processed) < len(LAYOUT)
    assert cache_bytes(folder) == cache_bytes(reference[0])
    assert not (folder / "partial").exists()
    # the warning after the resumed run still lists the skipped clips of the first run
    assert len(caught) == 1 and "0/missing.mp3 (missing)" in str(caught[0].message)
    assert open_store(folder).ok_rows.tolist() == open_store(reference[0]).ok_rows.tolist()


def test_kill_during_final_renames_is_completed_by_rerun(dataset, reference, tmp_path, monkeypatch):
    root, paths, ids = dataset
    folder = tmp_path / "cache"
    real_replace = os.replace

    def crash_on_index(src, dst):
        if Path(dst) == folder / "index.csv":
            raise KeyboardInterrupt("simulated kill between the final renames")
        return real_replace(src, dst)

    monkeypatch.setattr(cache.os, "replace", crash_on_index)
    with pytest.raises(KeyboardInterrupt):
        prepare_quietly(root, paths, ids, folder, CLIP, workers=1, progress=False)
    monkeypatch.setattr(cache.os, "replace", real_replace)
    assert (folder / "waveforms.int16").exists() and not (folder / "manifest.json").exists()
    with pytest.raises(DataError):
        open_store(folder)
    prepare_quietly(root, paths, ids, folder, CLIP, workers=1, progress=False)
    assert cache_bytes(folder) == cache_bytes(reference[0])
    assert not (folder / "partial").exists()


def test_changed_inputs_rebuild_and_old_cache_survives_failure(dataset, tmp_path, monkeypatch):
    root, paths, ids = dataset
    audio = tmp_path / "audio"
    for rel in paths:  # a private copy of the dataset we can modify
        if (root / rel).exists():
            (audio / rel).parent.mkdir(parents=True, exist_ok=True)
            (audio / rel).write_bytes((root / rel).read_bytes())
    folder = tmp_path / "cache"
    prepare_quietly(audio, paths, ids, folder, CLIP, workers=1, progress=False)
    old = cache_bytes(folder)
    missing_row = paths.index("0/missing.mp3")
    sf.write(audio / "0/missing.mp3", _noise(99, CLIP), SAMPLE_RATE, format="MP3")  # the input changes

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "_process_chunk", broken)
    with pytest.raises(DataError, match="rerun continues"):
        prepare_quietly(audio, paths, ids, folder, CLIP, workers=1, progress=False)
    assert cache_bytes(folder) == old, "a failed rebuild must not touch the previous cache"
    assert open_store(folder).index["status"][missing_row] == "missing"
    monkeypatch.undo()
    prepare_quietly(audio, paths, ids, folder, CLIP, workers=1, progress=False)
    c = open_store(folder)
    assert c.index["status"][missing_row] == "ok"
    np.testing.assert_array_equal(c.waveforms[missing_row], expected_row(audio / "0/missing.mp3"))
    # a different clip length is a different cache too
    prepare_quietly(audio, paths, ids, folder, CLIP // 2, workers=1, progress=False)
    assert open_store(folder).clip_samples == CLIP // 2


def test_partial_of_other_inputs_is_discarded_not_mixed(dataset, tmp_path):
    root, paths, ids = dataset
    folder = tmp_path / "cache"
    # an interrupted preparation with other clip ids: same audio, different fingerprint
    other_ids = [i + 1 for i in ids]
    _run_and_kill((root, paths, other_ids), folder, workers=1, extra_wait=0.0)
    prepare_quietly(root, paths, ids, folder, CLIP, workers=1, progress=False, chunk_rows=3)
    assert open_store(folder).index["clip_id"].tolist() == ids


def test_open_cache_refuses_absent_or_damaged(reference, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_store(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="incomplete or invalid"):
        open_store(tmp_path / "empty")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("waveforms.int16", "index.csv", "manifest.json"):
        (damaged / name).write_bytes((reference[0] / name).read_bytes())
    assert len(open_store(damaged)) == len(LAYOUT)
    with open(damaged / "waveforms.int16", "r+b") as handle:  # truncated data file
        handle.truncate(100)
    with pytest.raises(DataError, match=str(damaged)):
        open_store(damaged)
    (damaged / "waveforms.int16").write_bytes((reference[0] / "waveforms.int16").read_bytes())
    (damaged / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="incomplete or invalid"):
        open_store(damaged)


def test_unwritable_cache_folder(dataset, tmp_path):
    root, paths, ids = dataset
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(DataError, match=f"cache folder {blocker / 'cache'} is not writable"):
        prepare_cache(root, paths, ids, blocker / "cache", CLIP, workers=1, progress=False)
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(DataError, match="not writable"):
            prepare_cache(root, paths, ids, locked, CLIP, workers=1, progress=False)


def test_not_enough_disk_space(dataset, tmp_path, monkeypatch):
    root, paths, ids = dataset

    class Usage:
        free = 10

    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: Usage())
    with pytest.raises(DataError, match="not enough disk space"):
        prepare_cache(root, paths, ids, tmp_path / "c", CLIP, workers=1, progress=False)


def test_argument_errors(dataset, tmp_path):
    root, paths, ids = dataset
    with pytest.raises(ConfigError, match="clip ids"):
        prepare_cache(root, paths, ids[:-1], tmp_path / "c", CLIP)
    with pytest.raises(ConfigError, match="no clips"):
        prepare_cache(root, [], [], tmp_path / "c", CLIP)
    with pytest.raises(ConfigError, match="clip_samples"):
        prepare_cache(root, paths, ids, tmp_path / "c", 0)


def _sum_rows(pickled_cache: bytes) -> list[int]:
    """Runs in a spawned process: unpickle the cache and read its rows there."""
    c = pickle.loads(pickled_cache)
    assert c._waveforms is None, "the memmap must not travel in the pickle"
    return [int(c.waveforms[row].astype(np.int64).sum()) for row in c.ok_rows]


def test_cache_pickles_and_reopens_lazily_in_other_processes(reference):
    c = open_store(reference[0])
    expected = [int(c.waveforms[row].astype(np.int64).sum()) for row in c.ok_rows]  # memmap now open
    data = pickle.dumps(c)
    assert len(data) < 100_000, "the pickle must not carry the waveforms"
    clone = pickle.loads(data)
    assert clone._waveforms is None and clone.ok_rows.tolist() == c.ok_rows.tolist()
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        assert pool.submit(_sum_rows, data).result(timeout=120) == expected


MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys, warnings
    sys.path.insert(0, {repo!r})
    from datamodules.store.fixed import prepare_cache
    warnings.simplefilter("ignore")
    n = {n}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    prepare_cache({root!r}, ["0/long.mp3"] * n, list(range(n)), {folder!r}, {clip}, workers=1,
                  progress=False, chunk_rows=64)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024)
    """
)


def test_peak_memory_does_not_grow_with_the_dataset(tmp_path):
    clip = 320_000  # 20 s: 640 KB per row
    n = 240  # 154 MB of cache
    (tmp_path / "audio" / "0").mkdir(parents=True)
    sf.write(tmp_path / "audio" / "0" / "long.mp3", _noise(1, clip), SAMPLE_RATE, format="MP3")
    script = MEMORY_SCRIPT.format(repo=str(REPO_ROOT), root=str(tmp_path / "audio"), n=n,
                                  folder=str(tmp_path / "cache"), clip=clip)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    growth = int(out.stdout.strip().splitlines()[-1])
    total = n * clip * 2
    assert (tmp_path / "cache" / "waveforms.int16").stat().st_size == total
    assert growth < 40e6, f"peak RSS grew by {growth / 1e6:.0f} MB for a {total / 1e6:.0f} MB cache"


def test_script_from_stdin_decodes_in_process(dataset, reference, tmp_path, monkeypatch):
    """Spawned workers cannot re-import a __main__ read from stdin: decode in-process instead."""
    root, paths, ids = dataset
    monkeypatch.setattr(sys.modules["__main__"], "__file__", "/nonexistent/<stdin>", raising=False)

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool must not be started")

    monkeypatch.setattr(workers, "ProcessPoolExecutor", no_pool)
    prepare_quietly(root, paths, ids, tmp_path / "c", CLIP, workers=2, progress=False, chunk_rows=3)
    assert cache_bytes(tmp_path / "c") == cache_bytes(reference[0])
