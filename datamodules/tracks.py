"""Segments of full-length tracks (MTG-Jamendo): the data module's dataset for `datamodules.store.ragged`.

MTAT's clips all last 29.1 s, so `datamodules.datamodule.SegmentDataset` cuts fixed offsets out of a
rectangle. Tracks differ in length (MTG-Jamendo: mean 244 s), so here every offset depends on the
track's stored length:

* training with ``train_crop="random"`` (the default on MTG-Jamendo, as in Won et al. 2020): each item is
  a chunk of ``segment_samples`` starting anywhere in the track, drawn from (seed, epoch, item) alone, so
  a resumed run reads exactly the chunks an uninterrupted one would (``layout.random_crops`` of them per
  track in an epoch, else ``segments_per_clip``);
* evaluation (and training with ``train_crop="fixed"``): ``segments_per_clip`` chunks spread evenly from
  the track's start to its end (`SegmentLayout.track_starts`), whose probabilities the module averages
  per track exactly as it averages MTAT's segments per clip (the track's row plays the clip's part).

A track shorter than a chunk is zero-padded at its end (every chunk of it then starts at 0); the real
dataset has none shorter than 30 s, so this only matters for short chunk lengths of the stand-in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.segments import SegmentLayout
from datamodules.store.ragged import open_ragged_store


class TrackSegmentDataset(Dataset):
    """Item `track_position * per_clip + k`: chunk k of a track, read from a ragged store.

    Returns the same dict as `SegmentDataset` (`waveform` int16, `target`, `clip` = the track's row,
    `segment` = k), so the module, its metrics and the DDP-exact evaluation need no change.
    """

    def __init__(self, store_dir: Path, rows: np.ndarray, labels: np.ndarray, lengths: np.ndarray,
                 layout: SegmentLayout, random_crop: bool, seed: int):
        self.store_dir = Path(store_dir)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.float32)  # one row per track row
        self.lengths = np.asarray(lengths, dtype=np.int64)  # stored samples per track row
        self.layout, self.random_crop, self.seed = layout, random_crop, seed
        self.per_clip = layout.items_per_clip(random_crop)
        self._store = None  # opened lazily in each worker process

    def __len__(self) -> int:
        return len(self.rows) * self.per_clip

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_store"] = None
        return state

    def start(self, item: int, epoch: int = 0) -> int:
        """Where item ``item`` of epoch ``epoch`` starts in its track (samples)."""
        position, segment = divmod(int(item), self.per_clip)
        length = int(self.lengths[self.rows[position]])
        if self.random_crop:
            room = max(0, length - self.layout.segment_samples)
            return int(np.random.default_rng([self.seed, epoch, int(item)]).integers(0, room + 1))
        return int(self.layout.track_starts(length)[segment])

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        item, epoch = key if isinstance(key, tuple) else (key, 0)
        position, segment = divmod(int(item), self.per_clip)
        row = int(self.rows[position])
        if self._store is None:
            self._store = open_ragged_store(self.store_dir)
        samples = self._store.read(row, self.start(item, epoch), self.layout.segment_samples)
        return {
            "waveform": torch.from_numpy(samples),
            "target": torch.from_numpy(self.labels[row]),
            "clip": torch.tensor(row, dtype=torch.long),
            "segment": torch.tensor(segment, dtype=torch.long),
        }
