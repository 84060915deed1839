"""Shared settings for tests that train real models on a small synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

# 3.7 s clips (3^10 samples): long enough for every architecture, short enough for CPU training.
TINY_CLIP_SAMPLES = 59_049
TINY_CLIPS = 240


def tiny_data_args(cache_dir: Path, clips: int = TINY_CLIPS, clip_samples: int = TINY_CLIP_SAMPLES) -> list[str]:
    """run.py options selecting the small synthetic dataset kept in `cache_dir`."""
    return ["--data", "synthetic", "--synthetic-clips", str(clips), "--synthetic-clip-samples",
            str(clip_samples), "--cache-dir", str(cache_dir), "--num-workers", "0", "--no-progress"]


# Mel settings that fit 3.7 s clips (the paper's hop 1792 gives mel_cnn only 33 frames there).
TINY_MEL_ARGS = {
    "sample_cnn": [],
    "sample_cnn_frames": [],
    "mel_cnn": ["--hop-length", "512", "--n-mels", "96"],
    "lstm_mel": ["--hop-length", "512", "--n-mels", "64", "--segments-per-clip", "2"],
}


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def run_options(*argv: str, model: str = "mel_cnn"):
    """The normalised run options of `run.py --model MODEL ARGV...` (the one options builder of the tests)."""
    import run

    return run.parse_options(["--model", model, *argv])
