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
    """SLURM's environment faked and its commands recorded (tests/fake_slurm.py): (env, calls)."""
    from tests.fake_slurm import make_fake_cluster

    return make_fake_cluster(tmp_path)
