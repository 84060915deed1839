"""Finished run folders made from given clip probabilities, as a training run leaves them.

The comparison tests need runs whose predictions they choose (identical, better, noisier), which training cannot
give on demand; these folders hold exactly the files a run writes (config.json, metrics.json, per_tag.csv,
test_predictions.npz), built by the suite's own writers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from experiments.reporting.predictions import PREDICTIONS_FILE, Predictions, write_predictions
from experiments.reporting.results import write_results
from lightning_modules.metrics import equal_error_thresholds, tagging_metrics, threshold_fallbacks

TAGS = ["guitar", "drums", "piano", "voice", "quiet"]


def fake_run(folder: Path, probs: np.ndarray, targets: np.ndarray, *, seed: int = 0, model: str = "mel_cnn",
              clip_ids: np.ndarray | None = None, tags=TAGS, **config) -> Path:
    """A finished run folder as run_experiment leaves it, from given clip probabilities."""
    folder.mkdir(parents=True)
    clip_ids = np.arange(len(probs)) * 3 + 100 if clip_ids is None else clip_ids
    thresholds = equal_error_thresholds(torch.from_numpy(probs), torch.from_numpy(targets))
    fell_back = threshold_fallbacks(torch.from_numpy(targets)).to(torch.int8)  # the test clips stand in for validation
    report = tagging_metrics(torch.from_numpy(probs), torch.from_numpy(targets), tags, thresholds=thresholds,
                             threshold_fell_back=fell_back)
    resolved = dict({"model": model, "seed": seed, "data": "synthetic", "tags": "paper", "split": "folder",
                     "optimizer": "sgd", "lr": 0.01, "synthetic_clips": 120, "synthetic_clip_samples": 84000,
                     "synthetic_seed": 0, "run_dir": str(folder), "logger": "none"}, **config)
    resolved["resolved"] = {"tags": list(tags), "parameters": 1234}
    (folder / "config.json").write_text(json.dumps(resolved))
    write_predictions(folder / PREDICTIONS_FILE, Predictions(
        clip_ids, np.arange(len(probs)), targets, probs, thresholds.numpy(), tags, "folder", "paper", "synthetic",
        fell_back.numpy()))
    write_results(folder, resolved, report, thresholds, best_checkpoint=None, best_val={}, epochs=1)
    return folder


def scores(n_clips=120, seed=0, quality=1.0):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n_clips, len(TAGS))) < 0.3).astype(np.uint8)
    targets[0] = 1
    targets[1] = 0
    noise = rng.normal(0, 1, targets.shape)
    probs = 1 / (1 + np.exp(-(quality * (2 * targets.astype(np.float64) - 1) + noise)))
    return probs.astype(np.float32), targets
