"""The seam between one dataset's files and the shared data pipeline.

The data module (`datamodules.datamodule`), the waveform store, the sampler, the segments and
the frontend know nothing about any dataset's files: they ask a `DatasetReader` for the clips
(ids and audio files, one row each, in a fixed order: the store's rows), their length, the tag
vocabularies and the splits it offers, and the `StoreSpec` of the store that holds them. Every
dataset is a sub-package of the same shape, ``datamodules/datasets/<name>/``: ``reader.py`` (its
`DatasetReader`s, for a folder as distributed and for the generated stand-in), ``splits.py``,
``download.py``, ``checks.py`` (what a download is verified against), ``standin.py`` (the generated
stand-in) and, where a dataset has more than one tag set, ``vocabulary.py``. MagnaTagATune is read by
`datamodules.datasets.mtat.reader.MTATReader` and `datamodules.datasets.mtat.reader.SyntheticMTATReader`,
MTG-Jamendo by `datamodules.datasets.jamendo.reader.JamendoReader` and its `SyntheticJamendoReader`;
another dataset plugs in by implementing the same small protocols.

Modules here and in the dataset packages keep their heavy imports (soundfile, the store) inside the
functions that need them: the command line imports the readers for its choices and defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

STAGES = ("train", "valid", "test")
"""The stages a split assigns clips to, in this order."""


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """A tag set a model is trained on, and the labels of every clip row for it.

    Attributes:
        name: the vocabulary's name (one of the reader's ``vocabularies``).
        tags: tag names, in the order of the label columns.
        labels: (N, len(tags)) uint8 matrix of 0/1 labels, rows as in the reader's clips.
    """

    name: str
    tags: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.tags)


class Clips(Protocol):
    """The clips of a dataset as read once: one row per clip, in the order of the store's rows."""

    clip_ids: np.ndarray
    """(N,) int64 clip ids (recorded in the store's index)."""

    audio_paths: Sequence[str]
    """N audio file paths relative to the reader's `DatasetReader.audio_root`."""

    def vocabulary(self, name: str, n_tags: int) -> Vocabulary:
        """The tag vocabulary ``name`` with at most ``n_tags`` tags (ConfigError when it cannot be built)."""

    def split(self, name: str) -> dict[str, np.ndarray]:
        """Row indices of each stage of split ``name``: ``{"train": rows, "valid": rows, "test": rows}``."""


class StoreSpec(Protocol):
    """The waveform store a dataset's clips go into: `datamodules.store.fixed.FixedSpec` (clips of one
    length) or `datamodules.store.ragged.RaggedSpec` (tracks of any length)."""

    def folder(self, cache_root: Path, reader: DatasetReader) -> Path:
        """The store's folder under ``cache_root`` (named so that a store is found again, and reused)."""

    def write(self, folder: Path, clips: Clips, audio_root: Path, *, workers: int, progress: bool) -> None:
        """Decode every clip once into the store ``folder`` (resumable; reused when complete)."""

    def check_segments(self, segments) -> None:
        """ConfigError when segments of this `datamodules.segments.SegmentLayout` cannot be read from the store."""

    def check(self, store) -> None:
        """DataError when the opened store was written with other settings than this spec's."""


class DatasetReader(Protocol):
    """What the data module needs from a dataset; every method raises DataError/ConfigError for bad data."""

    vocabularies: tuple[str, ...]
    """Names `Clips.vocabulary` accepts (the choices of ``--tags``)."""

    splits: tuple[str, ...]
    """Names `Clips.split` accepts (the choices of ``--split``)."""

    @property
    def data_dir(self) -> Path:
        """The dataset's folder (absolute); it names the dataset's waveform store."""

    def prepare(self, *, progress: bool) -> None:
        """One-time work before the dataset can be read (e.g. generating it); a no-op for a plain folder."""

    def read(self) -> Clips:
        """Read the dataset's clip list and labels."""

    def audio_root(self) -> Path:
        """The folder the `Clips.audio_paths` are relative to."""

    def clip_samples(self) -> int:
        """Samples per clip at 16 kHz: the length of every clip, or the window whole-clip models read of a track."""

    def store_spec(self) -> StoreSpec:
        """The store the clips go into."""
