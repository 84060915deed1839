"""Self-training's unlabelled pool (datamodules/unlabeled.py): a folder of any audio decoded once, broken files listed
as tagging lists them, and an epoch's unlabelled crops drawn from (seed, epoch) alone."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf
import torch

from datamodules.unlabeled import ERRORS_FILE, MixedDataset, UnlabeledPool, audio_files
from infrastructure.errors import ConfigError, DataError


class _Items(torch.utils.data.Dataset):
    """Item i of epoch e is {"item": i, "epoch": e}."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        item, epoch = key
        return {"item": torch.tensor(item), "epoch": torch.tensor(epoch)}


def _unlabelled(dataset: MixedDataset, epoch: int) -> list[tuple[int, int]]:
    """(pool item, cycle) of every unlabelled slot of an epoch, read through the dataset."""
    out = []
    for slot in range(len(dataset.labelled), len(dataset)):
        got = dataset[(slot, epoch)]
        assert not bool(got["labeled"])
        out.append((int(got["item"]), int(got["epoch"])))
    return out


def test_an_epoch_holds_the_labelled_items_then_pool_crops_that_go_through_the_pool_in_cycles():
    dataset = MixedDataset(_Items(6), _Items(5), per_epoch=4, seed=3)
    assert len(dataset) == 10
    first = dataset[(2, 0)]
    assert bool(first["labeled"]) and int(first["item"]) == 2
    walk = [slot for epoch in range(5) for slot in _unlabelled(dataset, epoch)]  # 20 slots: four cycles of 5
    for cycle in range(4):
        visits = walk[cycle * 5:(cycle + 1) * 5]
        assert sorted(item for item, _ in visits) == [0, 1, 2, 3, 4]  # every file once per cycle
        assert {c for _, c in visits} == {cycle}  # a file's crop is drawn anew in each cycle
    # from (seed, epoch) alone: a fresh dataset (a resumed run, another worker) reads epoch 3 the same way
    assert _unlabelled(MixedDataset(_Items(6), _Items(5), per_epoch=4, seed=3), 3) == _unlabelled(dataset, 3)
    other = [slot for epoch in range(5) for slot in _unlabelled(MixedDataset(_Items(6), _Items(5), 4, seed=4), epoch)]
    assert other != walk


def _wav(path, seconds: float, rate: int = 22_050, channels: int = 2) -> None:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([tone] * channels, axis=1) if channels > 1 else tone, rate)


def test_a_folder_of_any_audio_is_decoded_once_and_broken_files_are_listed(tmp_path):
    folder = tmp_path / "music"
    (folder / "album").mkdir(parents=True)
    _wav(folder / "album" / "a.wav", 1.5)  # 22.05 kHz stereo: resampled to 16 kHz mono
    _wav(folder / "b.flac", 0.5, rate=16_000, channels=1)
    (folder / "broken.mp3").write_bytes(b"not audio at all" * 10)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.txt").write_text("not audio, not looked at")
    pool, cache = UnlabeledPool(folder), tmp_path / "cache"
    line = pool.prepare(cache, workers=1, progress=False)
    errors = pool.store_folder(cache) / ERRORS_FILE
    assert line == (f"unlabeled audio {folder}: 2 of 4 file(s) decoded into {pool.store_folder(cache)}; 2 error(s) "
                    f"listed in {errors}")
    with open(errors, newline="") as stream:
        rows = {row["path"]: row for row in csv.DictReader(stream)}
    assert set(rows) == {str(folder / "broken.mp3"), str(folder / "empty.wav")}
    assert rows[str(folder / "broken.mp3")]["reason"].startswith("not a readable audio file")
    assert rows[str(folder / "empty.wav")]["status"] == "empty"
    store = pool.open(cache)
    assert sorted(store.lengths[store.ok_rows].tolist()) == [8_000, 24_000]
    assert pool.prepare(cache, workers=1, progress=False) == line  # reused
    _wav(folder / "c.wav", 0.25, rate=16_000, channels=1)  # a new file: the store follows the folder
    assert "3 of 5 file(s)" in pool.prepare(cache, workers=1, progress=False)


def test_a_pool_without_usable_audio_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        audio_files(tmp_path / "nowhere")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(ConfigError, match="no audio files"):
        audio_files(tmp_path / "texts")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.mp3").write_bytes(b"x" * 100)
    with pytest.raises(DataError, match="none of its 1 audio file"):
        UnlabeledPool(tmp_path / "broken").prepare(tmp_path / "cache", workers=1, progress=False)
