"""`test_predictions.npz`: the clip-level test predictions every run and evaluation keeps.

Single numbers cannot say whether model B beats model A on the same clips; the predictions can
(paired bootstrap in `lightning_modules/bootstrap.py`, ensembles in `lightning_modules/ensemble.py`).
So a run folder keeps, beside metrics.json, one NumPy archive (`np.load` reads it, no pickle):

* ``clip_ids`` (N,) int64: MTAT's ``clip_id`` of each test clip, in the order the clip-level
  metrics saw them (ascending annotation row);
* ``rows`` (N,) int64: the clips' rows in ``annotations_final.csv``;
* ``targets`` (N, T) uint8: the 0/1 tags of each clip;
* ``probs`` (N, T) float32: the clip probabilities the reported metrics were computed from
  (segment probabilities averaged per clip), bit for bit;
* ``thresholds`` (T,) float64: the per-tag thresholds applied for TPR/FPR (chosen on validation);
* ``threshold_fallback`` (T,) int8: which of them fell back to 0.5 for want of validation
  positives (`lightning_modules.metrics` ``THRESHOLD_*`` codes); files written before it existed
  read as `metrics.derived_fallback_record` of their thresholds;
* ``tags`` (T,) str: the tag names, in column order;
* ``split``, ``vocabulary``, ``data``: which split, tag vocabulary and dataset the clips come
  from (``data`` is the dataset folder, the generated one included), so two files can be told
  apart when they do not describe the same test set;
* ``format_version``: 1.

Scoring ``probs`` against ``targets`` with `lightning_modules.metrics.tagging_metrics` and
``thresholds`` gives exactly the test numbers in metrics.json (the tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from infrastructure.errors import DataError
from infrastructure.io import atomic_path
from lightning_modules.metrics import derived_fallback_record

PREDICTIONS_FILE = "test_predictions.npz"
FORMAT_VERSION = 1


@dataclass
class Predictions:
    """The contents of one test_predictions.npz (see the module docstring)."""

    clip_ids: np.ndarray
    rows: np.ndarray
    targets: np.ndarray
    probs: np.ndarray
    thresholds: np.ndarray
    tags: list[str]
    split: str
    vocabulary: str
    data: str
    threshold_fallback: np.ndarray | None = None  # None: derived from the thresholds (see the module docstring)

    def __post_init__(self) -> None:
        self.clip_ids = np.asarray(self.clip_ids, dtype=np.int64)
        self.rows = np.asarray(self.rows, dtype=np.int64)
        self.targets = np.asarray(self.targets, dtype=np.uint8)
        self.probs = np.asarray(self.probs, dtype=np.float32)
        self.thresholds = np.asarray(self.thresholds, dtype=np.float64)
        self.tags = [str(t) for t in self.tags]
        if self.threshold_fallback is None:
            self.threshold_fallback = derived_fallback_record(torch.from_numpy(self.thresholds)).numpy()
        self.threshold_fallback = np.asarray(self.threshold_fallback, dtype=np.int8)
        n, t = self.probs.shape if self.probs.ndim == 2 else (-1, -1)
        if (self.probs.ndim != 2 or self.targets.shape != self.probs.shape or self.clip_ids.shape != (n,)
                or self.rows.shape != (n,) or len(self.tags) != t or self.thresholds.shape != (t,)
                or self.threshold_fallback.shape != (t,)):
            raise ValueError(f"inconsistent predictions: probs {self.probs.shape}, targets {self.targets.shape}, "
                             f"{self.clip_ids.shape[0]} clip ids, {len(self.tags)} tags, "
                             f"{self.thresholds.shape} thresholds")

    @property
    def n_clips(self) -> int:
        return int(self.clip_ids.shape[0])

    def sorted_by_clip(self) -> Predictions:
        """The same predictions with the clips in ascending clip id order."""
        order = np.argsort(self.clip_ids, kind="stable")
        return Predictions(self.clip_ids[order], self.rows[order], self.targets[order], self.probs[order],
                           self.thresholds, self.tags, self.split, self.vocabulary, self.data, self.threshold_fallback)


def write_predictions(path: str | Path, predictions: Predictions) -> Path:
    """Write `predictions` to `path` atomically (a reader sees the old file or the whole new one; the file gets
    the mode the user's umask gives)."""
    path = Path(path)
    p = predictions
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a file object: np.savez adds no ".npz" to it
        np.savez(handle, clip_ids=p.clip_ids, rows=p.rows, targets=p.targets, probs=p.probs, thresholds=p.thresholds,
                 threshold_fallback=p.threshold_fallback, tags=np.array(p.tags, dtype=str), split=np.array(p.split),
                 vocabulary=np.array(p.vocabulary), data=np.array(p.data), format_version=np.array(FORMAT_VERSION))
    return path


def read_predictions(path: str | Path) -> Predictions:
    """Read a test_predictions.npz (DataError naming the file when it is missing or not one)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no saved test predictions (runs made before predictions were saved lack "
                        f"{PREDICTIONS_FILE}; evaluate the run again with --evaluate RUN_DIR)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            version = int(archive["format_version"])
            if version != FORMAT_VERSION:
                raise DataError(f"{path}: predictions format {version}, this suite reads {FORMAT_VERSION}")
            return Predictions(archive["clip_ids"], archive["rows"], archive["targets"], archive["probs"],
                               archive["thresholds"], archive["tags"].tolist(), str(archive["split"]),
                               str(archive["vocabulary"]), str(archive["data"]),
                               archive["threshold_fallback"] if "threshold_fallback" in archive.files else None)
    except DataError:
        raise
    except Exception as error:  # truncated, foreign or missing keys
        raise DataError(f"{path}: not a readable {PREDICTIONS_FILE} ({type(error).__name__}: {error})") from None


def predictions_from_capture(probs, targets, rows, clip_id_of_row: np.ndarray, tags, thresholds, *,
                             split: str, vocabulary: str, data: str, threshold_fallback=None) -> Predictions:
    """Build `Predictions` from the clip-level tensors of an evaluation (rows are annotation rows)."""
    rows = np.asarray(rows.cpu() if hasattr(rows, "cpu") else rows, dtype=np.int64)
    as_np = (lambda x: x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x))
    return Predictions(clip_id_of_row[rows], rows, as_np(targets), as_np(probs), as_np(thresholds), list(tags),
                       split, vocabulary, data, None if threshold_fallback is None else as_np(threshold_fallback))


def save_run_predictions(run_dir: Path, capture, datamodule, thresholds, options,
                         threshold_fallback=None) -> Path | None:
    """Write RUN_DIR/test_predictions.npz from a `TestPredictionsCapture` that saw the test (None when it did not).

    The ordering is that of the capture (ascending annotation row, which is how ClipPredictions
    sorts its clips), so the probabilities are exactly those the module scored.
    """
    if getattr(capture, "probs", None) is None:
        return None
    predictions = predictions_from_capture(
        capture.probs, capture.targets, capture.clip_ids, datamodule.clip_ids(), datamodule.tags,
        thresholds, split=datamodule.hparams.split, vocabulary=datamodule.hparams.vocabulary,
        data=str(datamodule.data_dir), threshold_fallback=threshold_fallback)
    return write_predictions(Path(run_dir) / PREDICTIONS_FILE, predictions)
