"""Shared test fixtures: the tiny generated dataset every training test uses, and one options builder.

The repository root is on sys.path through pytest's `pythonpath` setting (pyproject.toml).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.helpers import TINY_CLIP_SAMPLES, TINY_MEL_ARGS, TRAINED_LSTM_ARGS, tiny_data_args

TINY_CACHE_CLIPS = 120


@dataclass(frozen=True)
class TinyData:
    """A small synthetic dataset (3.7 s clips) and its cache, generated once per test session."""

    cache_dir: Path
    clips: int = TINY_CACHE_CLIPS
    clip_samples: int = TINY_CLIP_SAMPLES

    @property
    def synthetic(self) -> dict:
        return {"n_clips": self.clips, "clip_samples": self.clip_samples, "seed": 0}

    def args(self) -> list[str]:
        """run.py options selecting this dataset."""
        return tiny_data_args(self.cache_dir, self.clips, self.clip_samples)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """The one cache folder of the test session: every generated dataset (each size its own subfolder)
    and its decoded cache, made once and shared by every test file."""
    path = tmp_path_factory.getbasetemp() / "synthetic-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_cache(cache_dir) -> TinyData:
    return TinyData(cache_dir)


@pytest.fixture
def fake_cluster(tmp_path):
    """SLURM's environment faked and its commands recorded (tests/support/fake_slurm.py): (env, calls)."""
    from tests.support.fake_slurm import make_fake_cluster

    return make_fake_cluster(tmp_path)


# ---- the shared trained runs: tiny, one epoch, made once per session ------------------------------------
@pytest.fixture(scope="session")
def mel_cnn_run(tiny_cache, tmp_path_factory) -> Path:
    """A finished one-epoch mel_cnn run (paper vocabulary) on the tiny data; also prepares its cache."""
    import run

    run_dir = tmp_path_factory.mktemp("mel-cnn-run") / "run"
    code = run.main(["--model", "mel_cnn", *tiny_cache.args(), *TINY_MEL_ARGS["mel_cnn"], "--max-epochs", "1",
                     "--limit-train-batches", "2", "--logger", "none", "--run-dir", str(run_dir)])
    assert code == 0
    return run_dir


@pytest.fixture(scope="session")
def lstm_mel_run(tiny_cache, tmp_path_factory) -> Path:
    """A finished one-epoch lstm_mel run (4 segments per clip) on the tiny data."""
    import run

    run_dir = tmp_path_factory.mktemp("lstm-mel-run") / "run"
    code = run.main(["--model", "lstm_mel", *tiny_cache.args(), *TRAINED_LSTM_ARGS, "--max-epochs", "1",
                     "--run-dir", str(run_dir), "--logger", "none"])
    assert code == 0
    return run_dir


@pytest.fixture
def cpu_variant(monkeypatch):
    """Swap a model's registry entry for its CPU-sized variant (the entry's `small.spec`; its options are
    tests/support/helpers.py `small_model_args`) for the rest of the test."""
    from lightning_modules import registry

    def apply(model: str) -> None:
        monkeypatch.setitem(registry.MODELS, model, registry.model_spec(model).small_variant())
    return apply


@pytest.fixture(scope="session")
def learned_mel_cnn_run(tiny_cache, tmp_path_factory) -> Path:
    """mel_cnn (small variant) trained 15 epochs with Adam on the tiny data: enough to tell the generated
    instruments apart (the taggram's two-halves test, similarity by embeddings, the tagging docs' examples;
    test ROC-AUC 0.75 here); about a minute on 2 cores."""
    import run

    run_dir = tmp_path_factory.mktemp("mel-cnn-learned") / "run"
    code = run.main(["--model", "mel_cnn", *tiny_cache.args(), *TINY_MEL_ARGS["mel_cnn"], "--max-epochs", "15",
                     "--optimizer", "adam", "--lr", "0.002", "--logger", "none", "--run-dir", str(run_dir)])
    assert code == 0
    return run_dir
