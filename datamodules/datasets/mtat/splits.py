"""MTAT's train/valid/test splits (`SPLITS`): the row indices of each stage.

* ``folder`` (the default, and the paper's): MP3 folders ``0``-``b`` train, ``c`` valid,
  ``d``-``f`` test. It works on any dataset with the MTAT folder layout, the synthetic one
  included. Real MTAT: 18,709 / 1,825 / 5,329 clips.
* ``clean``: the lists shipped in ``datamodules/datasets/mtat/clean_splits/clean_{train,valid,test}.txt``
  (the folder split restricted to clips with at least one standard top-50 tag, without the three
  zero-byte MP3s and clips 29, 11268, 11269). Real MTAT only: 15,244 / 1,529 / 4,332 clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamodules.datasets.base import STAGES as SPLIT_STAGES
from datamodules.datasets.mtat.annotations import MTATAnnotations
from infrastructure.errors import ConfigError, DataError

SPLITS = ("folder", "clean")
"""Names accepted by `split_rows`; ``folder`` is the default (the paper's split)."""

DEFAULT_SPLIT = "folder"
"""The split used unless the user asks otherwise: the paper's, and valid for any MTAT layout."""

HEX_FOLDERS = tuple("0123456789abcdef")
"""The sixteen sub-folders the MTAT MP3s are spread over."""

FOLDER_SPLIT = {
    "train": tuple("0123456789ab"),
    "valid": ("c",),
    "test": ("d", "e", "f"),
}
"""Which MP3 folders form each stage of the ``folder`` split."""

CLEAN_SPLIT_DIR = Path(__file__).resolve().parent / "clean_splits"
"""Folder holding the shipped ``clean_{train,valid,test}.txt`` lists (package data)."""


def _mp3_folder(mp3_path: str) -> str:
    """The top-level folder of a relative MP3 path (``"f/x.mp3"`` -> ``"f"``)."""
    return mp3_path.replace("\\", "/").split("/", 1)[0]


def load_clean_lists(split_dir: Path = CLEAN_SPLIT_DIR) -> dict[str, frozenset[str]]:
    """Read the shipped ``clean_{train,valid,test}.txt`` lists (one mp3 path per line).

    Raises:
        DataError: when a list file is missing or unreadable.
    """
    lists = {}
    for stage in SPLIT_STAGES:
        list_path = split_dir / f"clean_{stage}.txt"
        try:
            text = list_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{list_path}: cannot read the clean split list: {exc}") from exc
        lists[stage] = frozenset(line.strip() for line in text.splitlines() if line.strip())
    return lists


def split_rows(annotations: MTATAnnotations, name: str = DEFAULT_SPLIT) -> dict[str, np.ndarray]:
    """Row indices (int64, ascending) of each stage of split ``name`` (one of `SPLITS`).

    ``folder`` (default, the paper's): MP3 folders 0-b train, c valid, d-f test; works on any
    MTAT-layout dataset. ``clean``: rows whose mp3_path is in the shipped clean lists; real MTAT
    only.

    Returns:
        ``{"train": rows, "valid": rows, "test": rows}``.

    Raises:
        ConfigError: unknown split name, or ``clean`` on a dataset none of whose paths is in the
            clean lists (e.g. the synthetic dataset).
        DataError: ``folder`` on a dataset with an MP3 path outside the 0..f folders.
    """
    paths = annotations.mp3_paths
    if name == "folder":
        stage_of = {folder: stage for stage, folders in FOLDER_SPLIT.items() for folder in folders}
        stages = []
        for row, p in enumerate(paths):
            stage = stage_of.get(_mp3_folder(p))
            if stage is None:
                raise DataError(
                    f"{annotations.source}: row {row} (clip {annotations.clip_ids[row]}): mp3_path {p!r} "
                    "is not inside one of the folders 0..f, so the folder split cannot place it"
                )
            stages.append(stage)
        stage_arr = np.asarray(stages)
        return {s: np.flatnonzero(stage_arr == s).astype(np.int64) for s in SPLIT_STAGES}
    if name == "clean":
        lists = load_clean_lists()
        result = {
            stage: np.asarray([i for i, p in enumerate(paths) if p in members], dtype=np.int64)
            for stage, members in lists.items()
        }
        if not any(len(rows) for rows in result.values()):
            raise ConfigError(
                f"split 'clean' applies to the real MagnaTagATune only: none of the mp3 paths in "
                f"{annotations.source} is in the clean lists; use the 'folder' split"
            )
        return result
    raise ConfigError(f"unknown split {name!r}; choose one of: {', '.join(SPLITS)}")
