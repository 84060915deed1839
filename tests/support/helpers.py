"""Shared settings for tests that train real models on a small synthetic dataset."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from lightning_modules.registry import MODELS, model_spec

# 3.7 s clips (3^10 samples): long enough for every architecture, short enough for CPU training.
TINY_CLIP_SAMPLES = 59_049
TINY_CLIPS = 240
CHUNK_CLIP_SAMPLES = 84_000
"""5.25 s clips: long enough for the paper's mel_cnn hop (1792 needs 46 frames, 82,432 samples) and for one of
Won's 5 s chunks; test_compare's end-to-end runs and the chunk models' DDP runs share this set (120 clips)."""
KILL_EPOCHS = 10
"""Epochs of the sweep trials the tests SIGKILL once their first checkpoint exists: the kill lands about 0.35 s
later, and an epoch of the tiny lstm_mel trials takes about 0.2 s on 2 cores (with two epochs, a trial once
finished before the kill)."""
TEST_MEL_BACKEND = "torchaudio"
"""The Mel backend of the tests' tiny runs (why: `tiny_data_args`)."""


def tiny_data_args(cache_dir: Path, clips: int = TINY_CLIPS, clip_samples: int = TINY_CLIP_SAMPLES,
                   figures: bool = False, mel_backend: str | None = TEST_MEL_BACKEND) -> list[str]:
    """run.py options selecting the small synthetic dataset kept in `cache_dir`.

    Without `figures`, the runs skip their end-of-run plots (--no-figures), which cost about as much as
    a tiny run's training; tests/integration/test_wandb_logging.py's default run writes and checks them.

    `mel_backend` torchaudio: on the CPU nnAudio's STFT is a convolution with n_fft-long kernels, about
    45% of a mel_cnn training step on these clips, where torchaudio's FFT costs a few percent; the two
    give the same log-Mel (tests/unit/datamodules/test_frontend.py) and the frontend holds no state, so what a test of
    training, resume, DDP or sweeps proves does not depend on it. None keeps the default (nnAudio): the
    resume tests, the mel_cnn DDP run, the W&B default run and the GPU tests run as a user does.
    A waveform model ignores the option.
    """
    return ["--data", "synthetic", "--synthetic-clips", str(clips), "--synthetic-clip-samples",
            str(clip_samples), "--cache-dir", str(cache_dir), "--num-workers", "0", "--no-progress",
            *([] if figures else ["--no-figures"]), *(["--mel-backend", mel_backend] if mel_backend else [])]


# The shared lstm_mel run's settings (tests/conftest.py `lstm_mel_run`): 4 segments of 3.7 s clips.
TRAINED_LSTM_ARGS = ["--hop-length", "256", "--n-mels", "64", "--segments-per-clip", "4"]


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def run_options(*argv: str, model: str = "mel_cnn"):
    """The normalised run options of `run.py --model MODEL ARGV...` (the one options builder of the tests)."""
    import run

    return run.parse_options(["--model", model, *argv])


@contextlib.contextmanager
def one_torch_thread():
    """Torch on one thread inside the block: on 2 shared cores a second thread slows an LSTM step many times over
    (platform-facts.md), and results recorded on one thread are reproduced bit for bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def small_model_args(name: str) -> list[str]:
    """run.py options that make model `name` small enough for seconds-long CPU runs on 3.7 s clips: its registry
    entry's `small.args` (the entry's own changes, `small.spec`, are applied by the `cpu_variant` fixture)."""
    return list(model_spec(name).small.args)


TINY_MEL_ARGS = {name: small_model_args(name) for name in MODELS}
"""Each model's small-variant options: for the paper's Mel models, Mel settings that fit 3.7 s clips (the paper's
hop 1792 gives mel_cnn only 33 frames there)."""


# One epoch of two training batches per rank under 2-process DDP on the CPU (tests/support/ddp_models.py), at a rate
# that moves the models off their nearly constant initial outputs (won2020's Adam 1e-4 leaves their test
# probabilities so close together that float rounding alone reorders the clips).
DDP_MODEL_ARGS = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--max-epochs", "1",
                  "--limit-train-batches", "2", "--batch-size", "4", "--eval-batch-size", "4", "--lr", "0.003",
                  "--logger", "none"]


# The MTG-Jamendo stand-in the tests train on: 24 tracks of 4-8 s, the fewest with every part of every subset
# non-empty for seed 0 (16 leave split 0 without validation tracks).
JAMENDO_STAND_IN_ARGS = ["--dataset", "mtg-jamendo", "--data", "synthetic", "--synthetic-tracks", "24",
                         "--synthetic-min-seconds", "4", "--synthetic-max-seconds", "8",
                         "--jamendo-clip-samples", str(TINY_CLIP_SAMPLES), "--num-workers", "0", "--no-progress",
                         "--no-figures", "--mel-backend", TEST_MEL_BACKEND, "--logger", "none"]
