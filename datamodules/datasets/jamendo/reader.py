"""The data module's view of MTG-Jamendo (`datamodules.datasets.base.DatasetReader`): real folders and the stand-in.

`JamendoReader` reads one split set of one subset (`datamodules.datasets.jamendo.splits.read_split`) of a folder
holding the split TSVs (``DIR/splits/split-<k>/`` or ``DIR/data/splits/...``, or a separate
metadata folder) and the audio folders ``00``-``99`` (in ``DIR``, or ``DIR/audio``). Its clips are
the tracks of that split set, one row each, **sorted by track number**, so every split set of a
subset that holds the same tracks (the five top-50 splits do) maps to the same rows and hence to
the same waveform store: changing ``--jamendo-split`` does not decode the audio again.

Its tracks differ in length, so its store is a ragged one (`store_spec`: `datamodules.store.ragged.RaggedSpec`,
one int16 array plus offsets) instead of MTAT's rectangle, and `clip_samples` is not a track length but
the window whole-clip models read (MTAT's 29.1 s clip by default, so mel_cnn, lstm_mel and sample_cnn run
unchanged; chunk models use their own chunk).

`SyntheticJamendoReader` is the generated stand-in (`datamodules.datasets.jamendo.standin`), generated
into the cache folder on first use, like `datamodules.datasets.mtat.reader.SyntheticMTATReader`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.datasets.base import Vocabulary
from datamodules.datasets.jamendo.splits import (
    QUALITIES,
    SPLITS,
    SUBSETS,
    JamendoSplit,
    audio_path,
    find_splits_dir,
    read_split,
    track_number,
)
from datamodules.datasets.jamendo.standin import (
    DEFAULT_MAX_SECONDS,
    DEFAULT_MIN_SECONDS,
    DEFAULT_N_TRACKS,
    generate_synthetic_jamendo,
    synthetic_jamendo_dir_name,
)
from infrastructure.audio import MTAT_CLIP_SAMPLES, SAMPLE_RATE
from infrastructure.errors import ConfigError, DataError

DATASET = "mtg-jamendo"
"""The ``--dataset`` value of MTG-Jamendo."""

DEFAULT_SPLIT = 0
DEFAULT_SUBSET = "top50tags"
DEFAULT_QUALITY = "low"

AUDIO_SUBFOLDERS = ("", "audio", "audio-low")
"""Where under ``DIR`` the folders ``00``-``99`` are looked for, in this order."""


class JamendoClips:
    """The tracks of one split set (`datamodules.datasets.base.Clips`), sorted by track number."""

    def __init__(self, split_set: JamendoSplit, quality: str):
        numbers = np.array([track_number(t) for t in split_set.track_ids], dtype=np.int64)
        order = np.argsort(numbers, kind="stable")
        self.split_set = split_set
        self.clip_ids = numbers[order]
        self.audio_paths = [audio_path(str(p), quality) for p in split_set.paths[order]]
        self.durations = split_set.durations[order]
        self._labels = np.ascontiguousarray(split_set.targets[order], dtype=np.uint8)
        self._part = split_set.part[order]

    def vocabulary(self, name: str, n_tags: int) -> Vocabulary:
        """The subset's whole tag set (sorted ``category---tag``); ``n_tags`` does not apply (checked by the options)."""
        if name != self.split_set.subset:
            raise ConfigError(f"MTG-Jamendo subset {name!r} asked of the {self.split_set.subset} split files")
        return Vocabulary(name=name, tags=tuple(self.split_set.tags), labels=self._labels)

    def split(self, name: str) -> dict[str, np.ndarray]:
        if name != str(self.split_set.split):
            raise ConfigError(f"MTG-Jamendo split {name!r} asked of split set {self.split_set.split}")
        return {stage: np.flatnonzero(self._part == code).astype(np.int64)
                for code, stage in enumerate(("train", "valid", "test"))}


class JamendoReader:
    """An MTG-Jamendo folder as distributed (split TSVs + audio folders 00-99); see the module docstring."""

    def __init__(self, data_dir: str | Path, *, split: int = DEFAULT_SPLIT, subset: str = DEFAULT_SUBSET,
                 quality: str = DEFAULT_QUALITY, excerpt_samples: int | None = None,
                 clip_samples: int = MTAT_CLIP_SAMPLES, meta_dir: str | Path | None = None):
        if isinstance(split, bool) or split not in SPLITS:
            raise ConfigError(f"--jamendo-split must be one of {', '.join(map(str, SPLITS))}, got {split!r}")
        if subset not in SUBSETS:
            raise ConfigError(f"--jamendo-subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
        if quality not in QUALITIES:
            raise ConfigError(f"--jamendo-quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
        self._data_dir = data_dir
        self.split_number, self.subset, self.quality = split, subset, quality
        self.excerpt_samples = excerpt_samples
        self._clip_samples = clip_samples
        self._meta_dir = meta_dir
        self.vocabularies = (subset,)
        self.splits = (str(split),)
        self._clips: JamendoClips | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self._data_dir).expanduser().resolve()

    @property
    def meta_dir(self) -> Path:
        return Path(self._meta_dir).expanduser().resolve() if self._meta_dir else self.data_dir

    def prepare(self, *, progress: bool) -> None:
        """Nothing to do: the folder is read as it is (``--download DIR --dataset mtg-jamendo`` fetches the audio)."""

    def read(self) -> JamendoClips:
        if self._clips is None:  # 55k TSV rows: read once per process
            find_splits_dir(self.meta_dir)  # a DataError naming the folder when there are no split files
            self._clips = JamendoClips(read_split(self.meta_dir, self.split_number, self.subset), self.quality)
        return self._clips

    def audio_root(self) -> Path:
        for sub in AUDIO_SUBFOLDERS:
            candidate = self.data_dir / sub if sub else self.data_dir
            if any((candidate / f"{i:02d}").is_dir() for i in range(100)):
                return candidate
        raise DataError(f"{self.data_dir}: no MTG-Jamendo audio folders 00..99 (in it or in audio/); fetch them with "
                        f"--download {self.data_dir} --dataset mtg-jamendo")

    def clip_samples(self) -> int:
        return self._clip_samples

    def store_spec(self):
        """A ragged store, named (besides the folder and its tracks) by the audio quality and the excerpt."""
        from datamodules.store.ragged import RaggedSpec

        excerpt = "whole" if self.excerpt_samples is None else f"excerpt{self.excerpt_samples}"
        return RaggedSpec(self.excerpt_samples, f"{self.quality}-{excerpt}")


class SyntheticJamendoReader(JamendoReader):
    """The generated MTG-Jamendo stand-in in ``cache_root``, generated by `prepare` on first use (low quality only)."""

    def __init__(self, cache_root: str | Path, *, n_tracks: int = DEFAULT_N_TRACKS, min_seconds: float = DEFAULT_MIN_SECONDS,
                 max_seconds: float = DEFAULT_MAX_SECONDS, seed: int = 0, workers: int | None = None, **kwargs):
        if kwargs.get("quality", DEFAULT_QUALITY) != "low":
            raise ConfigError("the generated MTG-Jamendo stand-in has low-quality audio only (--jamendo-quality low)")
        self.cache_root = Path(cache_root)
        self.n_tracks, self.min_seconds, self.max_seconds, self.seed = n_tracks, min_seconds, max_seconds, seed
        self.workers = workers
        super().__init__(self.cache_root / synthetic_jamendo_dir_name(n_tracks, seed, min_seconds, max_seconds), **kwargs)

    @property
    def data_dir(self) -> Path:
        return Path(self._data_dir)  # inside the cache root, as given (it names the store folder)

    def prepare(self, *, progress: bool) -> None:
        generated = generate_synthetic_jamendo(self.data_dir, n_tracks=self.n_tracks, seed=self.seed,
                                               min_seconds=self.min_seconds, max_seconds=self.max_seconds,
                                               workers=self.workers, progress=progress)
        if Path(generated).resolve() != self.data_dir.resolve():
            raise RuntimeError(f"synthetic MTG-Jamendo generated at {generated}, expected {self.data_dir}")


def excerpt_samples_of(seconds: float | None) -> int | None:
    """``--excerpt-seconds`` in samples at 16 kHz (None: whole tracks)."""
    if seconds is None:
        return None
    if not seconds > 0:
        raise ConfigError(f"--excerpt-seconds must be positive, got {seconds}")
    return int(round(seconds * SAMPLE_RATE))
