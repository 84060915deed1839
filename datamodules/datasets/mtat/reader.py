"""Reading MagnaTagATune (MTAT) as it is distributed, and its generated stand-in: the data module's readers.

* `MTATReader` (an MTAT folder: ``annotations_final.csv`` and the MP3 folders ``0``..``f``, or a folder
  laid out like one) and `SyntheticMTATReader` (the generated stand-in, generated on first use) are what
  the data module reads MTAT-layout datasets through (`datamodules.datasets.base.DatasetReader`);
  `mtat_reader` picks one for a ``--data`` value. Their clips are the rows of the annotations
  (`datamodules.datasets.mtat.annotations`), their vocabularies `datamodules.datasets.mtat.vocabulary`'s,
  their splits `datamodules.datasets.mtat.splits`'s, and their store a fixed-length one (every clip has
  the same length).
* `find_audio_root` and `dataset_clip_samples` describe where a dataset's MP3s live and how long
  its clips are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.datasets.base import Vocabulary
from datamodules.datasets.mtat.annotations import MTATAnnotations, read_annotations
from datamodules.datasets.mtat.splits import HEX_FOLDERS, SPLITS, split_rows
from datamodules.datasets.mtat.standin import (
    DEFAULT_N_CLIPS,
    METADATA_FILE,
    ensure_synthetic_mtat,
    read_metadata,
    synthetic_dir_name,
)
from datamodules.datasets.mtat.vocabulary import TAG_VOCABULARIES, build_vocabulary
from infrastructure.audio import MTAT_CLIP_SAMPLES
from infrastructure.errors import DataError


def find_audio_root(data_dir: str | Path) -> Path:
    """Return the folder that holds the ``0``..``f`` MP3 sub-folders of a dataset.

    Looks at ``DATA_DIR/mp3/`` first (where ``--download`` unpacks), then at ``DATA_DIR``
    itself (the zip unpacked in place). A candidate qualifies if it holds at least one of the
    sixteen hex sub-folders (a small dataset need not use all of them).

    Raises:
        DataError: when neither location holds any of the sub-folders.
    """
    data_dir = Path(data_dir)
    for candidate in (data_dir / "mp3", data_dir):
        if any((candidate / h).is_dir() for h in HEX_FOLDERS):
            return candidate
    raise DataError(
        f"{data_dir}: no MP3 folders found: expected sub-folders 0..f in {data_dir / 'mp3'} "
        f"or in {data_dir} itself (download the dataset with --download)"
    )


def dataset_clip_samples(data_dir: str | Path) -> int:
    """Clip length in samples of the dataset in ``data_dir``.

    The synthetic generator writes ``DATA_DIR/synthetic.json`` with key ``clip_samples``; when
    that file exists its value is used, otherwise the real MTAT length `MTAT_CLIP_SAMPLES`.

    Raises:
        DataError: when ``synthetic.json`` exists but is unreadable or lacks a positive integer
            ``clip_samples``.
    """
    meta = read_metadata(data_dir)
    if meta is None:
        return MTAT_CLIP_SAMPLES
    value = meta.get("clip_samples")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DataError(f"{Path(data_dir) / METADATA_FILE}: 'clip_samples' must be a positive integer, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------------
# The data module's view of an MTAT-layout dataset (datamodules.datasets.base.DatasetReader)
# ------------------------------------------------------------------------------------------------
ANNOTATIONS_FILE = "annotations_final.csv"

SYNTHETIC = "synthetic"
"""The ``--data`` value that selects the generated stand-in."""


class MTATClips:
    """The clips of an MTAT-layout dataset (`datamodules.datasets.base.Clips`): its annotations, one row per clip."""

    def __init__(self, annotations: MTATAnnotations):
        self.annotations = annotations
        self.clip_ids = annotations.clip_ids
        self.audio_paths = annotations.mp3_paths

    def vocabulary(self, name: str, n_tags: int) -> Vocabulary:
        return build_vocabulary(self.annotations, name, n_tags)

    def split(self, name: str) -> dict[str, np.ndarray]:
        return split_rows(self.annotations, name)


class MTATReader:
    """An MTAT folder as distributed (annotations_final.csv and the MP3 folders 0-f), or laid out like one."""

    vocabularies = TAG_VOCABULARIES
    splits = SPLITS

    def __init__(self, data_dir: str | Path):
        self._data_dir = data_dir

    @property
    def data_dir(self) -> Path:
        return Path(self._data_dir).expanduser().resolve()

    def prepare(self, *, progress: bool) -> None:
        """Nothing to do: the folder is read as it is (``--download`` fetches it)."""

    def read(self) -> MTATClips:
        path = self.data_dir / ANNOTATIONS_FILE
        if not path.is_file():
            raise DataError(f"{path}: annotations file not found (is {self.data_dir} an MTAT folder?)")
        return MTATClips(read_annotations(path))

    def audio_root(self) -> Path:
        return find_audio_root(self.data_dir)

    def clip_samples(self) -> int:
        return dataset_clip_samples(self.data_dir)

    def store_spec(self):
        """A fixed-length store: every clip is `clip_samples` long."""
        from datamodules.store.fixed import FixedSpec

        return FixedSpec(self.clip_samples())


class SyntheticMTATReader(MTATReader):
    """The generated stand-in in ``cache_root`` (`datamodules.datasets.mtat.standin`), generated by `prepare` on first use."""

    def __init__(self, cache_root: str | Path, n_clips: int = DEFAULT_N_CLIPS, clip_samples: int = MTAT_CLIP_SAMPLES,
                 seed: int = 0):
        self.cache_root = Path(cache_root)
        self.n_clips, self.synthetic_clip_samples, self.seed = n_clips, clip_samples, seed
        super().__init__(self.cache_root / synthetic_dir_name(n_clips, clip_samples, seed))

    @property
    def data_dir(self) -> Path:
        return Path(self._data_dir)  # inside the cache root, as given (it names the cache folder)

    def clip_samples(self) -> int:
        """The generated clips' length, known before they are generated (their synthetic.json says the same)."""
        return self.synthetic_clip_samples

    def prepare(self, *, progress: bool) -> None:
        generated = ensure_synthetic_mtat(self.cache_root, n_clips=self.n_clips,
                                          clip_samples=self.synthetic_clip_samples, seed=self.seed, progress=progress)
        if Path(generated).resolve() != self.data_dir:
            raise RuntimeError(f"synthetic dataset generated at {generated}, expected {self.data_dir}")


def mtat_reader(data: str | Path, cache_root: str | Path, *, n_clips: int = DEFAULT_N_CLIPS,
                clip_samples: int = MTAT_CLIP_SAMPLES, seed: int = 0) -> MTATReader:
    """The reader of ``--data``: `SyntheticMTATReader` for ``"synthetic"`` (in ``cache_root``), else `MTATReader`."""
    if data == SYNTHETIC:
        return SyntheticMTATReader(cache_root, n_clips, clip_samples, seed)
    return MTATReader(data)
