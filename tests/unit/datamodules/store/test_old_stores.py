"""Stores written before the two layouts became one store open, and are reused or resumed, as they are.

tests/support/old_stores/ holds what the code of commit 2f67a39 (``datamodules.store.prepare_cache`` and
``datamodules.store.ragged.write_ragged_store``, each with its own manifest, progress record and resume
logic) wrote, with the arguments below:

* ``fixed/``: a finished fixed-length store of the five clips of ``audio/`` (`FIXED_PATHS`; three decode, one
  is missing, one has zero bytes), ``clip_samples=4000, workers=1, chunk_rows=2``;
* ``fixed-interrupted/``: the same preparation stopped (KeyboardInterrupt) in its second chunk: ``partial/``
  with that code's ``progress.npy`` (rows 0-1 done);
* ``ragged/``: a finished ragged store of `RAGGED_ITEMS` decoded by
  ``tests.support.ragged_items.generated_decoder`` (one track fails halfway), ``commit_bytes=1000,
  fingerprint_extra="old-store-fixture"``;
* ``ragged-interrupted/``: the same store killed in its fifth track: ``partial/journal.tsv`` with four rows
  and samples of the fifth past the last commit.

A store the old code finished must be reused without decoding anything, byte for byte as it is; an
interrupted one must resume where it stopped and end with the bytes the old code's uninterrupted run wrote.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from datamodules.decoding import decode_audio
from datamodules.store import fixed
from datamodules.store.fixed import FixedSpec, prepare_cache
from datamodules.store.format import PARTIAL_DIR
from datamodules.store.ragged import RaggedSpec, write_ragged_store
from datamodules.store.reader import FixedStore, RaggedStore, open_store
from tests.support.paths import REPO_ROOT
from tests.support.ragged_items import generated_decoder, recording_decoder

OLD = REPO_ROOT / "tests" / "support" / "old_stores"
AUDIO = OLD / "audio"
FIXED_PATHS = ["0/a.mp3", "1/b.mp3", "3/missing.mp3", "2/c.mp3", "3/empty.mp3"]
FIXED_IDS = [2, 5, 8, 11, 14]
CLIP = 4000
RAGGED_ITEMS = [("k0", "0:1500"), ("k1", "1:900"), ("bad", "bad:0"), ("k3", "3:2100"), ("k4", "4:300"),
                ("k5", "5:1200")]
RAGGED_OPTIONS = {"commit_bytes": 1000, "fingerprint_extra": "old-store-fixture"}
STORE_FILES = {"fixed": ("waveforms.int16", "index.csv", "manifest.json"),
               "ragged": ("waveforms.int16", "offsets.npy", "index.csv", "manifest.json")}


def _copy(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(OLD / name, tmp_path / name))


def _contents(folder: Path, layout: str) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in STORE_FILES[layout]}


def _prepare_fixed(folder: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare_cache(AUDIO, FIXED_PATHS, FIXED_IDS, folder, CLIP, workers=1, progress=False, chunk_rows=2)


def test_an_old_fixed_store_opens_and_is_reused_without_decoding(tmp_path, monkeypatch):
    folder = _copy("fixed", tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("a finished store must not be decoded again")

    monkeypatch.setattr(fixed, "_process_chunk", fail)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no decoding, no warning about skipped clips either
        assert prepare_cache(AUDIO, FIXED_PATHS, FIXED_IDS, folder, CLIP, workers=1, progress=False) == folder
    assert _contents(folder, "fixed") == _contents(OLD / "fixed", "fixed")
    store = open_store(folder)
    assert isinstance(store, FixedStore) and store.clip_samples == CLIP and len(store) == 5
    assert store.index["status"].tolist() == ["ok", "ok", "missing", "ok", "empty"]
    assert store.ok_rows.tolist() == [0, 1, 3] and store.keys == [str(i) for i in FIXED_IDS]
    for row in store.ok_rows:  # what it holds is what the decoder gives today
        expected = np.zeros(CLIP, dtype=np.int16)
        decoded = fixed.decode_clip(AUDIO / FIXED_PATHS[row], CLIP).samples
        expected[:len(decoded)] = decoded
        assert np.array_equal(store.segment(int(row), 0, CLIP), expected)
    assert np.allclose(store.read(0), decode_audio(AUDIO / FIXED_PATHS[0], sample_rate=16000).waveform[:CLIP],
                       atol=1 / 32768 + 1e-7)


def test_an_old_interrupted_fixed_preparation_resumes_from_its_progress(tmp_path, monkeypatch):
    folder = _copy("fixed-interrupted", tmp_path)
    assert (folder / PARTIAL_DIR / "progress.npy").is_file()
    processed = []
    real = fixed._process_chunk

    def spy(audio_root, waveforms_path, clip_samples, rows, mp3_paths):
        processed.extend(rows)
        return real(audio_root, waveforms_path, clip_samples, rows, mp3_paths)

    monkeypatch.setattr(fixed, "_process_chunk", spy)
    _prepare_fixed(folder)
    assert processed == [2, 3, 4], "rows 0-1 were done before the interruption"
    assert _contents(folder, "fixed") == _contents(OLD / "fixed", "fixed")
    assert not (folder / PARTIAL_DIR).exists()


def test_an_old_ragged_store_opens_and_is_reused_without_decoding(tmp_path):
    folder = _copy("ragged", tmp_path)

    def fail(path):
        raise AssertionError("a finished store must not be decoded again")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = write_ragged_store(folder, RAGGED_ITEMS, decoder=fail, **RAGGED_OPTIONS)
    assert _contents(folder, "ragged") == _contents(OLD / "ragged", "ragged")
    assert isinstance(store, RaggedStore) and store.keys == [key for key, _ in RAGGED_ITEMS]
    assert [entry.status for entry in store.index] == ["ok", "ok", "decode_error", "ok", "ok", "ok"]
    assert store.index[2].detail == "fails halfway" and store.lengths.tolist() == [1500, 900, 0, 2100, 300, 1200]
    for row, (_, path) in enumerate(RAGGED_ITEMS):
        if row != 2:
            assert np.array_equal(store.track(row), np.concatenate(list(generated_decoder(path))))
    assert store.segment(4, 200, 200).tolist() == store.track(4)[200:].tolist() + [0] * 100


def test_an_old_interrupted_ragged_store_resumes_from_its_journal(tmp_path):
    folder = _copy("ragged-interrupted", tmp_path)
    decoded = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_ragged_store(folder, RAGGED_ITEMS, decoder=recording_decoder(decoded), **RAGGED_OPTIONS)
    assert decoded == ["4:300", "5:1200"], "the four journaled tracks were done before the kill"
    assert _contents(folder, "ragged") == _contents(OLD / "ragged", "ragged")


@pytest.mark.parametrize("spec, reader, name", [
    (FixedSpec(CLIP), SimpleNamespace(data_dir=Path("/data/mtat")), "waveforms/mtat-4b7a78e91814"),
    (RaggedSpec(80_000, "low-excerpt80000"),
     SimpleNamespace(data_dir=Path("/data/jamendo"),
                     read=lambda: SimpleNamespace(clip_ids=np.array([1000, 1037, 1074], dtype=np.int64))),
     "tracks/jamendo-low-excerpt80000-35897929b7ef"),
])
def test_store_folders_keep_the_names_the_old_code_gave_them(spec, reader, name):
    """The data module finds an old store where the old code put it (names computed with that code)."""
    assert spec.folder(Path("/cache"), reader) == Path("/cache") / name
