"""Tests of the synthetic MTAT-layout dataset (datamodules/datasets/synthesis/).

Most tests share one generated dataset (64 clips of 2 s, two encoding processes). The audibility
test renders 400 clips of 1.5 s in memory and asks a cross-validated logistic regression on
log-Mel band statistics for a macro ROC-AUC above 0.75 (measured: 0.80-0.82 for seeds 1-3 and
7) over the tags with at least 5 positives; the same predictions score about 0.5 against
shuffled labels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from datamodules.datasets.mtat.standin import (
    ANNOTATIONS_FILE,
    CLIP_INFO_COLUMNS,
    CLIP_INFO_FILE,
    GENERATOR_VERSION,
    METADATA_FILE,
    PARTIAL_FILE,
    ensure_synthetic_mtat,
    generate_synthetic_mtat,
    synthetic_dir_name,
)
from datamodules.datasets.synthesis.plan import TAGS, plan_clip
from datamodules.datasets.synthesis.render import synthesize_clip
from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError
from tests.support.paths import SHARED_DIR

MTAT_DIR = SHARED_DIR / "mtat"
"""The real MTAT metadata, in ../shared beside the clone; the checks against it skip when it is absent."""
N_CLIPS = 64
CLIP_SAMPLES = 32_000
SEED = 3
MP3_FRAME = 1152
"""Samples in one MP3 frame: the allowed decoded-length slack."""


def standard_top50() -> list[str]:
    path = MTAT_DIR / "standard_top50_tags.txt"
    if path.exists():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    from datamodules.datasets.mtat.vocabulary import STANDARD_TOP50_TAGS

    return list(STANDARD_TOP50_TAGS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "data"
    returned = generate_synthetic_mtat(out, n_clips=N_CLIPS, clip_samples=CLIP_SAMPLES, seed=SEED,
                                       workers=2, progress=False)
    assert returned == out.resolve()
    return returned


def decode(path: Path) -> tuple[np.ndarray, int, int]:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return audio[:, 0], rate, audio.shape[1]


def test_csvs_follow_the_mtat_byte_conventions(dataset):
    for name, header in ((ANNOTATIONS_FILE, ("clip_id",) + TAGS + ("mp3_path",)),
                         (CLIP_INFO_FILE, CLIP_INFO_COLUMNS)):
        raw = (dataset / name).read_bytes()
        assert raw.endswith(b"\r\n")
        assert raw.count(b"\n") == raw.count(b"\r\n") == N_CLIPS + 1  # CRLF everywhere, no bare LF
        lines = raw.decode("utf-8").split("\r\n")[:-1]
        for line in lines:
            fields = line.split("\t")
            assert len(fields) == len(header)
            assert all(len(f) >= 2 and f[0] == '"' and f[-1] == '"' and '"' not in f[1:-1] for f in fields)
        assert [f.strip('"') for f in lines[0].split("\t")] == list(header)


def test_csv_headers_match_the_real_files(dataset):
    if not (MTAT_DIR / CLIP_INFO_FILE).is_file() or not (MTAT_DIR / ANNOTATIONS_FILE).is_file():
        pytest.skip(f"real MTAT metadata not found at {MTAT_DIR} (expected ../shared beside the clone)")
    # The clip_info header is byte-identical to the real file's, and both files open the same way.
    real_info_header = (MTAT_DIR / CLIP_INFO_FILE).read_bytes().split(b"\r\n", 1)[0]
    assert (dataset / CLIP_INFO_FILE).read_bytes().split(b"\r\n", 1)[0] == real_info_header
    real_annotations_start = (MTAT_DIR / ANNOTATIONS_FILE).read_bytes()[:11]
    assert (dataset / ANNOTATIONS_FILE).read_bytes()[:11] == real_annotations_start == b'"clip_id"\t"'


def test_csvs_parse_with_pandas_like_the_real_files(dataset):
    annotations = pd.read_csv(dataset / ANNOTATIONS_FILE, sep="\t")
    assert list(annotations.columns) == ["clip_id", *TAGS, "mp3_path"]
    assert len(annotations) == N_CLIPS
    assert set(np.unique(annotations[list(TAGS)].to_numpy())) <= {0, 1}
    assert annotations["clip_id"].is_unique and annotations["mp3_path"].is_unique
    assert list(annotations["clip_id"]) == [2 + 3 * i for i in range(N_CLIPS)]
    info = pd.read_csv(dataset / CLIP_INFO_FILE, sep="\t", dtype=str, keep_default_na=False)
    assert list(info.columns) == list(CLIP_INFO_COLUMNS)
    assert list(info["mp3_path"]) == list(annotations["mp3_path"])
    assert list(info["clip_id"].astype(int)) == list(annotations["clip_id"])
    assert all(len(t) == 2 and t.isdigit() for t in info["track_number"])
    assert all(int(e) - int(s) == 2 for s, e in zip(info["segmentStart"], info["segmentEnd"]))
    # The tags match the plans they were derived from.
    for row in (0, 17, 63):
        tags = tuple(t for t in TAGS if annotations.loc[row, t] == 1)
        assert tags == plan_clip(SEED, row).tags


def test_mp3_layout_names_and_audio(dataset):
    annotations = pd.read_csv(dataset / ANNOTATIONS_FILE, sep="\t")
    folders = []
    for i, mp3_path in enumerate(annotations["mp3_path"]):
        folder, name = mp3_path.split("/")
        assert folder == "0123456789abcdef"[i % 16]
        folders.append(folder)
        parts = name[:-4].split("-")
        assert name.endswith(".mp3") and len(parts) == 6 and parts[2].isdigit() and parts[4].isdigit()
        assert all(p and p == p.lower() and " " not in p for p in parts)
    assert set(folders) == set("0123456789abcdef")
    train = sum(f in "0123456789ab" for f in folders)
    valid = sum(f == "c" for f in folders)
    assert (train, valid, N_CLIPS - train - valid) == (48, 4, 12)
    for mp3_path in annotations["mp3_path"][::9]:
        audio, rate, channels = decode(dataset / "mp3" / mp3_path)
        assert rate == SAMPLE_RATE and channels == 1
        assert abs(len(audio) - CLIP_SAMPLES) <= MP3_FRAME
        assert np.abs(audio).max() > 0.01
    assert sorted(p.name for p in (dataset / "mp3").iterdir()) == list("0123456789abcdef")


def test_metadata_is_complete_and_written_last(dataset):
    meta = json.loads((dataset / METADATA_FILE).read_text())
    assert meta == {"clip_samples": CLIP_SAMPLES, "sample_rate": SAMPLE_RATE, "n_clips": N_CLIPS, "seed": SEED,
                    "generator_version": GENERATOR_VERSION, "tags": list(TAGS)}
    meta_time = (dataset / METADATA_FILE).stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= meta_time for p in (dataset / "mp3").rglob("*.mp3"))
    assert not (dataset / PARTIAL_FILE).exists()
    assert not [p for p in dataset.rglob(".*tmp*")]
    assert len(list((dataset / "mp3").rglob("*.mp3"))) == N_CLIPS


def test_generation_is_deterministic_and_independent_of_workers(dataset, tmp_path):
    again = generate_synthetic_mtat(tmp_path / "again", n_clips=N_CLIPS, clip_samples=CLIP_SAMPLES, seed=SEED,
                                    workers=1, progress=False)
    for name in (ANNOTATIONS_FILE, CLIP_INFO_FILE):
        assert (again / name).read_bytes() == (dataset / name).read_bytes()
    mp3s = sorted(p.relative_to(dataset) for p in (dataset / "mp3").rglob("*.mp3"))
    assert mp3s == sorted(p.relative_to(again) for p in (again / "mp3").rglob("*.mp3"))
    for rel in mp3s[::5]:
        assert np.array_equal(decode(dataset / rel)[0], decode(again / rel)[0])
        digests = [hashlib.sha256((root / rel).read_bytes()).digest() for root in (dataset, again)]
        assert digests[0] == digests[1]  # byte-identical MP3s


PINNED_SHA256 = {
    ANNOTATIONS_FILE: "b009a57f8510d6da454ad4a8f425a91cac322c8f6572eb87938e90ff222adaf8",
    CLIP_INFO_FILE: "6c350d4e04f941d36cad566f69b3b61e40475fbd31138664f6f2c53799053e74",
    METADATA_FILE: "3c7036815f147898b0527c97de7adbe56feeebe75eba7f9a0a4adc5aac985d16",
}
"""SHA-256 of the files the generator wrote for (64 clips, 32,000 samples, seed 3) before the
module was split into a package: the refactor, and any later change that does not bump
GENERATOR_VERSION, must keep them byte-identical (plans, tags, names, CSV bytes)."""


def test_generated_files_match_the_pinned_bytes(dataset):
    assert GENERATOR_VERSION == 1, "the pinned hashes belong to generator version 1: re-pin them when bumping it"
    for name, digest in PINNED_SHA256.items():
        assert hashlib.sha256((dataset / name).read_bytes()).hexdigest() == digest, name


def test_clips_depend_only_on_seed_and_index():
    a = synthesize_clip(5, 11, 8000)
    b = synthesize_clip(5, 11, 8000)
    assert a.plan == b.plan and np.array_equal(a.audio, b.audio)
    assert a.audio.dtype == np.float32 and a.audio.shape == (8000,)
    assert not np.array_equal(a.audio, synthesize_clip(5, 12, 8000).audio)
    assert not np.array_equal(a.audio, synthesize_clip(6, 11, 8000).audio)
    assert plan_clip(5, 11) == a.plan


def test_second_generation_is_a_no_op(dataset):
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*") if p.is_file()}
    assert generate_synthetic_mtat(dataset, n_clips=N_CLIPS, clip_samples=CLIP_SAMPLES, seed=SEED,
                                   workers=2, progress=False) == dataset
    after = {p: p.stat().st_mtime_ns for p in dataset.rglob("*") if p.is_file()}
    assert before == after


def test_complete_folder_with_other_parameters_is_refused(dataset):
    with pytest.raises(ConfigError, match="other parameters"):
        generate_synthetic_mtat(dataset, n_clips=N_CLIPS + 1, clip_samples=CLIP_SAMPLES, seed=SEED, progress=False)


def test_interrupted_generation_is_finished(tmp_path):
    out = generate_synthetic_mtat(tmp_path / "d", n_clips=10, clip_samples=8000, seed=1, workers=1, progress=False)
    reference = {p.relative_to(out): p.read_bytes() for p in (out / "mp3").rglob("*.mp3")}
    # Simulate an interruption: no completion marker, the in-progress marker, two MP3s missing,
    # one temporary file left behind.
    params = json.loads((out / METADATA_FILE).read_text())
    del params["tags"]
    (out / METADATA_FILE).unlink()
    (out / PARTIAL_FILE).write_text(json.dumps(params))
    removed = sorted(reference)[:2]
    for rel in removed:
        (out / rel).unlink()
    stale = out / removed[0].parent / ".x.tmp-1234.mp3"
    stale.write_bytes(b"partial")
    kept = out / sorted(reference)[5]
    kept_time = kept.stat().st_mtime_ns
    generate_synthetic_mtat(out, n_clips=10, clip_samples=8000, seed=1, workers=1, progress=False)
    assert (out / METADATA_FILE).exists() and not (out / PARTIAL_FILE).exists()
    assert not stale.exists()
    assert {p.relative_to(out): p.read_bytes() for p in (out / "mp3").rglob("*.mp3")} == reference
    assert kept.stat().st_mtime_ns == kept_time  # finished, not redone


def test_interrupted_generation_with_other_parameters_is_rebuilt(tmp_path):
    out = generate_synthetic_mtat(tmp_path / "d", n_clips=6, clip_samples=8000, seed=1, workers=1, progress=False)
    (out / METADATA_FILE).unlink()
    (out / PARTIAL_FILE).write_text(json.dumps({"n_clips": 6, "seed": 1}))
    rebuilt = generate_synthetic_mtat(out, n_clips=4, clip_samples=8000, seed=2, workers=1, progress=False)
    meta = json.loads((rebuilt / METADATA_FILE).read_text())
    assert (meta["n_clips"], meta["seed"]) == (4, 2)
    assert len(list((rebuilt / "mp3").rglob("*.mp3"))) == 4
    fresh = generate_synthetic_mtat(tmp_path / "fresh", n_clips=4, clip_samples=8000, seed=2, workers=1,
                                    progress=False)
    assert (fresh / ANNOTATIONS_FILE).read_bytes() == (rebuilt / ANNOTATIONS_FILE).read_bytes()


def test_folder_with_foreign_mtat_files_is_refused(tmp_path):
    foreign = b'"clip_id"\t"track_number"\r\n"2"\t"01"\r\n'  # an MTAT file the generator did not write
    (tmp_path / CLIP_INFO_FILE).write_bytes(foreign)
    with pytest.raises(ConfigError, match="not written by the synthetic generator"):
        generate_synthetic_mtat(tmp_path, n_clips=2, clip_samples=8000, progress=False)
    assert (tmp_path / CLIP_INFO_FILE).read_bytes() == foreign


@pytest.mark.parametrize("kwargs", [{"n_clips": 0}, {"clip_samples": 100}, {"seed": -1}, {"workers": 0},
                                    {"n_clips": 2.5}])
def test_bad_options_raise_config_error(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        generate_synthetic_mtat(tmp_path / "x", **{"n_clips": 2, "clip_samples": 8000, **kwargs})


def test_ensure_creates_once_then_reuses(tmp_path, capsys):
    first = ensure_synthetic_mtat(tmp_path, n_clips=3, clip_samples=8000, seed=4, workers=1, progress=False)
    assert first == (tmp_path / f"synthetic-3-8000-4-v{GENERATOR_VERSION}").resolve()
    assert first.name == synthetic_dir_name(3, 8000, 4)
    stamp = (first / METADATA_FILE).stat().st_mtime_ns
    assert ensure_synthetic_mtat(tmp_path, 3, 8000, 4, progress=False) == first
    assert (first / METADATA_FILE).stat().st_mtime_ns == stamp
    assert capsys.readouterr().out == ""


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    generate_synthetic_mtat(tmp_path / "p", n_clips=2, clip_samples=8000, workers=1, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "2/2" in captured.err


def test_tag_vocabulary_and_statistics():
    plans = [plan_clip(0, i) for i in range(4000)]
    top50 = standard_top50()
    assert len(TAGS) == len(set(TAGS)) >= 20
    assert set(TAGS) <= set(top50)
    labels = np.array([[t in p.tags for t in TAGS] for p in plans])
    freq = labels.mean(axis=0)
    assert freq.min() > 0  # every tag occurs
    assert 0.12 <= freq.max() <= 0.26  # MTAT: guitar on 18.8 % of clips
    assert 0.01 <= freq.min() <= 0.04  # MTAT: choral on 1.9 %
    assert freq.max() / freq.min() >= 5  # imbalanced
    counts = labels.sum(axis=1)
    assert 0.05 <= (counts == 0).mean() <= 0.25  # some clips carry no tag
    assert 2 <= np.median(counts[counts > 0]) <= 6
    assert 0.6 <= np.mean((counts[counts > 0] >= 2) & (counts[counts > 0] <= 6))
    col = {t: labels[:, i] for i, t in enumerate(TAGS)}
    # Realistic correlations: genre implies instruments, exclusive concepts never co-occur.
    classical = np.array([p.genre == "classical" for p in plans])
    acoustic = {"piano", "harpsichord", "harp", "violin", "cello", "strings", "flute", "guitar"}
    assert np.mean([bool(acoustic & set(p.parts)) for p, c in zip(plans, classical) if c]) == 1.0
    assert not any(p.drums for p, c in zip(plans, classical) if c)
    assert col["drums"][col["classical"]].mean() < 0.02
    assert col["sitar"][col["indian"]].mean() > 0.5
    assert col["guitar"][col["rock"]].mean() > 0.5
    voice_tags = ["female", "male", "woman", "man", "vocal", "vocals", "singing", "voice"]
    no_voice = col["no vocals"] | col["no vocal"] | col["no voice"]
    assert not np.any(no_voice & np.any([col[t] for t in voice_tags], axis=0))
    assert not np.any(col["loud"] & (col["quiet"] | col["soft"]))
    assert not np.any(col["fast"] & col["slow"])


def test_levels_peak_where_they_should():
    found: dict[str, list[int]] = {"quiet": [], "normal": [], "loud": []}
    index = 0
    while min(len(v) for v in found.values()) < 4:
        level = plan_clip(9, index).level
        if len(found[level]) < 4:
            found[level].append(index)
        index += 1
    for level, indices in found.items():
        for i in indices:
            peak = float(np.abs(synthesize_clip(9, i, 8000).audio).max())
            if level == "loud":
                assert peak == pytest.approx(1.0, abs=1e-5)  # saturated on purpose
            elif level == "quiet":
                assert 0.02 <= peak <= 0.09
            else:
                assert 0.25 <= peak <= 0.8  # headroom: MP3 overshoot stays below full scale


def test_rendering_a_full_length_clip_is_fast_and_finite():
    import time

    from infrastructure.audio import MTAT_CLIP_SAMPLES

    start = time.perf_counter()
    clips = [synthesize_clip(0, i, MTAT_CLIP_SAMPLES) for i in range(6)]
    per_clip = (time.perf_counter() - start) / len(clips)
    assert all(c.audio.shape == (MTAT_CLIP_SAMPLES,) and np.isfinite(c.audio).all() for c in clips)
    assert per_clip < 0.5  # about 0.05 s unloaded; generous for a shared 2-core machine


def test_tags_are_audible_to_a_linear_model_on_log_mel_statistics():
    from sklearn.metrics import roc_auc_score

    from tests.support.probe import cross_validated_scores, mel_features

    n_clips, n_samples = 400, 24_000
    clips = [synthesize_clip(7, i, n_samples) for i in range(n_clips)]
    labels = np.array([[t in c.tags for t in TAGS] for c in clips], dtype=int)
    scores = cross_validated_scores(mel_features(np.stack([c.audio for c in clips])), labels)
    evaluated = [j for j in range(len(TAGS)) if labels[:, j].sum() >= 5]
    assert len(evaluated) >= 30
    macro = np.mean([roc_auc_score(labels[:, j], scores[:, j]) for j in evaluated])
    assert macro > 0.75, f"macro ROC-AUC {macro:.3f}"
    shuffled = labels[np.random.default_rng(0).permutation(n_clips)]
    control = np.mean([roc_auc_score(shuffled[:, j], scores[:, j]) for j in evaluated if shuffled[:, j].sum()])
    assert control < 0.6, f"shuffled-label control {control:.3f}"


def test_script_from_stdin_encodes_in_process(tmp_path, monkeypatch):
    """Spawned workers cannot re-import a __main__ read from stdin: encode in-process instead."""
    import sys

    from infrastructure import workers

    monkeypatch.setattr(sys.modules["__main__"], "__file__", "/nonexistent/<stdin>", raising=False)

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool must not be started")

    monkeypatch.setattr(workers, "ProcessPoolExecutor", no_pool)
    out = generate_synthetic_mtat(tmp_path / "s", n_clips=9, clip_samples=4000, workers=2, progress=False)
    assert len(list((out / "mp3").rglob("*.mp3"))) == 9
