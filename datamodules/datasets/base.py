"""The seam between one dataset's files and the shared data pipeline.

The data module (`datamodules.datamodule`), the waveform cache, the sampler, the segments and
the frontend know nothing about any dataset's files: they ask a `DatasetReader` for the clips
(ids and audio files, one row each, in a fixed order: the cache's rows), their length, the tag
vocabularies and the splits it offers. MagnaTagATune and its generated stand-in are read by
`datamodules.datasets.mtat.reader.MTATReader` and `datamodules.datasets.mtat.reader.SyntheticMTATReader`; another dataset
(MTG-Jamendo, say) plugs in by implementing the same two small protocols.
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
    """The clips of a dataset as read once: one row per clip, in the order of the cache's rows."""

    clip_ids: np.ndarray
    """(N,) int64 clip ids (recorded in the cache's index)."""

    audio_paths: Sequence[str]
    """N audio file paths relative to the reader's `DatasetReader.audio_root`."""

    def vocabulary(self, name: str, n_tags: int) -> Vocabulary:
        """The tag vocabulary ``name`` with at most ``n_tags`` tags (ConfigError when it cannot be built)."""

    def split(self, name: str) -> dict[str, np.ndarray]:
        """Row indices of each stage of split ``name``: ``{"train": rows, "valid": rows, "test": rows}``."""


class DatasetReader(Protocol):
    """What the data module needs from a dataset; every method raises DataError/ConfigError for bad data."""

    vocabularies: tuple[str, ...]
    """Names `Clips.vocabulary` accepts (the choices of ``--tags``)."""

    splits: tuple[str, ...]
    """Names `Clips.split` accepts (the choices of ``--split``)."""

    @property
    def data_dir(self) -> Path:
        """The dataset's folder (absolute); it names the dataset's waveform cache."""

    def prepare(self, *, progress: bool) -> None:
        """One-time work before the dataset can be read (e.g. generating it); a no-op for a plain folder."""

    def read(self) -> Clips:
        """Read the dataset's clip list and labels."""

    def audio_root(self) -> Path:
        """The folder the `Clips.audio_paths` are relative to."""

    def clip_samples(self) -> int:
        """Samples per clip at 16 kHz (every clip of the cache has this length)."""
