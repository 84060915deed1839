"""Shared test fixtures: the tiny generated dataset every training test uses, and one options builder.

The repository root is on sys.path through pytest's `pythonpath` setting (pyproject.toml).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import TINY_CLIP_SAMPLES, tiny_data_args

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
def tiny_cache(tmp_path_factory) -> TinyData:
    path = tmp_path_factory.getbasetemp() / f"synthetic-cache-{TINY_CACHE_CLIPS}"  # shared by every test file
    path.mkdir(exist_ok=True)
    return TinyData(path)


@pytest.fixture
def make_options(tiny_cache, tmp_path):
    """Build the normalised run options of a command line on the tiny dataset, with its own run folder."""
    import run

    def build(*argv: str, run_dir: Path | None = None):
        return run.parse_options([*tiny_cache.args(), "--run-dir", str(run_dir or tmp_path / "run"), *argv])

    return build
