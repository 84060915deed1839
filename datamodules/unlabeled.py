"""Unlabelled audio for self-training (`--unlabeled DIR`): a folder of any audio, decoded once, mixed into training.

The folder is walked as `--tag` walks one (`datamodules.audio_files`: audio suffixes, recursively) and every
file is decoded once, resampled to 16 kHz and averaged to mono, into a ragged waveform store of the cache
(`datamodules.store.ragged`: files of any length, resumable, rebuilt when a file is added, removed or changes
size). A file that cannot be used is skipped and reported as tagging reports it: ``errors.csv`` (path, status,
reason) beside the store and one line on stderr naming it; none usable is an error.

In training, `MixedDataset` puts ``per_epoch`` crops of the pool after the labelled items of an epoch: each a
random crop of the student's segment length (a file shorter than a segment is zero-padded, as short tracks
are), with no tags (its ``labeled`` flag is False; the teachers' probabilities are its targets,
`lightning_modules.distillation`). The pool is gone through in cycles, every file once per cycle in an order
and with crops drawn from (seed, cycle) alone, so an epoch's unlabelled crops, like its labelled ones, follow
from (seed, epoch): a resumed run reads exactly what an uninterrupted one reads.
"""

from __future__ import annotations

import csv
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.audio_files import find_audio_files
from datamodules.segments import SegmentLayout
from infrastructure.errors import ConfigError, DataError
from infrastructure.io import write_text_atomic

UNLABELED_DIR = "unlabeled"
"""The cache's folder of unlabelled stores."""
ERRORS_FILE = "errors.csv"
"""Beside a pool's store: the files that could not be used (path, status, reason)."""
_POOL_KEY = 0x554E4C42
"""Mixed into the run's seed for the pool's order and crops, so they are not those of the labelled items."""


def audio_files(folder: str | Path) -> list[Path]:
    """The audio files of ``folder`` in walk order; ConfigError (one line) when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--unlabeled {folder}: no such folder")
    found = find_audio_files([folder])
    if not found.files:
        raise ConfigError(f"--unlabeled {folder}: no audio files in this folder (looked for "
                          ".mp3, .wav, .flac, .ogg, ... recursively)")
    return found.files


@dataclass(frozen=True)
class UnlabeledPool:
    """The folder ``--unlabeled`` names and how many of its crops an epoch mixes in per labelled item."""

    folder: Path
    ratio: float = 1.0

    @classmethod
    def from_dict(cls, values: dict) -> UnlabeledPool:
        return cls(Path(values["folder"]), float(values.get("ratio", 1.0)))

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "ratio": self.ratio}

    def store_folder(self, cache_root: Path) -> Path:
        """The pool's store in the cache, named by the folder (its fingerprint follows the files in it)."""
        folder = self.folder.expanduser().resolve()
        digest = hashlib.sha1(str(folder).encode()).hexdigest()[:12]
        return Path(cache_root) / UNLABELED_DIR / f"{folder.name}-{digest}"

    def prepare(self, cache_root: Path, *, workers: int, progress: bool) -> str:
        """Decode every audio file of the folder into the pool's store (reused when complete) and list the files that
        could not be used in ``errors.csv`` beside it; the line that says so (for stderr).

        Raises:
            ConfigError: no such folder, or no audio file in it.
            DataError: none of its files could be decoded.
        """
        from datamodules.decoding import readable_reason
        from datamodules.store.ragged import write_ragged_store

        folder = self.folder.expanduser().resolve()
        files = audio_files(folder)
        items = [(file.relative_to(folder).as_posix(), str(file)) for file in files]  # the walk's paths lie in it
        target = self.store_folder(cache_root)
        with warnings.catch_warnings():  # the store names its skipped rows in a warning: reported below instead
            warnings.filterwarnings("ignore", message="waveform store .* skipped")
            store = write_ragged_store(target, items, workers=workers, progress=progress,
                                       fingerprint_extra=f"unlabeled {folder}")
        skipped = store.skipped()
        errors = target / ERRORS_FILE
        if skipped or errors.exists():
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(["path", "status", "reason"])
            paths = dict(items)
            for key, status, detail in skipped:
                writer.writerow([paths.get(key, key), status, readable_reason(detail)])
            write_text_atomic(errors, text.getvalue())
        usable = len(store) - len(skipped)
        if usable == 0:
            raise DataError(f"--unlabeled {folder}: none of its {len(store)} audio file(s) could be decoded "
                            f"(listed in {errors})")
        return (f"unlabeled audio {folder}: {usable} of {len(store)} file(s) decoded into {target}; {len(skipped)} "
                "error(s)" + (f" listed in {errors}" if skipped else ""))

    def open(self, cache_root: Path):
        """The pool's finished store (DataError when it is not prepared)."""
        from datamodules.store.reader import open_store

        return open_store(self.store_folder(cache_root))

    def per_epoch(self, labelled_items: int) -> int:
        """Unlabelled crops an epoch mixes in: ``ratio`` per labelled item (at least one)."""
        return max(1, int(round(self.ratio * labelled_items)))

    @staticmethod
    def crop_layout(layout: SegmentLayout) -> SegmentLayout:
        """The pool's crops: one random crop of the student's segment length per file and visit."""
        return SegmentLayout(layout.segment_samples, 1, "random", 1)

    @staticmethod
    def crop_seed(seed: int) -> int:
        """The seed of the pool's crops, derived from the run's (so that they are not the labelled items')."""
        return int(np.random.SeedSequence([int(seed) % (1 << 64), _POOL_KEY]).generate_state(1)[0])


class MixedDataset(Dataset):
    """An epoch of training: the labelled items (``labeled`` True), then ``per_epoch`` crops of the pool.

    Indexed, as `datamodules.datamodule.SegmentDataset` is, with `(item, epoch)` pairs (`EpochSampler` shuffles
    the whole range). Unlabelled slot j of epoch e is slot g = e * per_epoch + j of an endless walk through
    the pool in cycles of every file once: cycle c = g // n visits the files in an order, and crops each, as
    (seed, c) say.
    """

    def __init__(self, labelled: Dataset, pool: Dataset, per_epoch: int, seed: int):
        if len(pool) == 0:
            raise DataError("the unlabelled pool holds no usable file")
        self.labelled, self.pool, self.per_epoch = labelled, pool, int(per_epoch)
        self.seed = int(np.random.SeedSequence([int(seed) % (1 << 64), _POOL_KEY, 1]).generate_state(1)[0])
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.labelled) + self.per_epoch

    @property
    def rows(self) -> np.ndarray:
        """The labelled store rows (what the training split holds)."""
        return self.labelled.rows

    @property
    def labels(self) -> np.ndarray:
        """The labelled clips' tags, one row per store row."""
        return self.labelled.labels

    def _order(self, cycle: int) -> np.ndarray:
        order = self._orders.get(cycle)
        if order is None:
            order = np.random.default_rng([self.seed, cycle]).permutation(len(self.pool))
            if len(self._orders) >= 4:  # an epoch's shuffled slots span a few cycles at most
                self._orders.pop(min(self._orders))
            self._orders[cycle] = order
        return order

    def pool_item(self, slot: int, epoch: int) -> tuple[int, int]:
        """(pool item, cycle) of unlabelled slot ``slot`` of ``epoch``."""
        cycle, offset = divmod(int(epoch) * self.per_epoch + int(slot), len(self.pool))
        return int(self._order(cycle)[offset]), cycle

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        item, epoch = key if isinstance(key, tuple) else (key, 0)
        if item < len(self.labelled):
            out = self.labelled[(item, epoch)]
            out["labeled"] = torch.tensor(True)
            return out
        pool_item, cycle = self.pool_item(item - len(self.labelled), epoch)
        out = self.pool[(pool_item, cycle)]
        out["labeled"] = torch.tensor(False)
        return out
