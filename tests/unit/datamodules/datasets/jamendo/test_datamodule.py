"""MTG-Jamendo through the data module: options, the reader, the track store, chunking, every model end to end.

The ragged store's own guarantees (resumable after SIGKILL, byte-identical, bounded memory for
long tracks, atomic) are proved in tests/unit/datamodules/store/test_ragged_store.py; here: that the data module uses it
(prepared once, skipped tracks recorded), that chunks are where the protocol puts them, that bad
combinations of options stop before anything is prepared, and that every registered model trains
and tests on the generated stand-in, an `--evaluate` of its checkpoint giving its test metrics.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import run
from datamodules.datamodule import SegmentDataset
from datamodules.datasets.jamendo.reader import JamendoReader
from datamodules.datasets.jamendo.splits import read_split
from datamodules.segments import SegmentLayout
from datamodules.store.ragged import write_ragged_store
from datamodules.store.reader import open_store
from experiments.options import RunOptions
from infrastructure.errors import ConfigError
from lightning_modules.registry import MODELS
from tests.support.helpers import (
    JAMENDO_STAND_IN_ARGS,
    TINY_CLIP_SAMPLES,
    TINY_MEL_ARGS,
    read_metrics,
    small_model_args,
)
from tests.support.paths import SHARED_DIR

SHARED_JAMENDO = SHARED_DIR / "mtg-jamendo"

# 24 tracks of 4-8 s: the fewest with every part of every subset non-empty for seed 0 (16 leave split 0
# without validation tracks); about 3 s to generate and encode.


def _one_line_error(capsys, argv, expected: str, cache: Path) -> None:
    assert run.main([*argv, "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
    assert not (cache / "tracks").exists() and not (cache / "waveforms").exists()  # nothing was prepared


# ---------------------------------------------------------------- options
@pytest.mark.parametrize("argv, expected", [
    (["--jamendo-split", "1"], "--jamendo-split apply to --dataset mtg-jamendo only"),
    (["--excerpt-seconds", "30", "--jamendo-subset", "genre"], "--jamendo-subset, --excerpt-seconds apply to"),
    (["--dataset", "mtg-jamendo", "--split", "clean"], "MTG-Jamendo's split sets are --jamendo-split 0..4"),
    (["--dataset", "mtg-jamendo", "--tags", "standard"], "--jamendo-subset"),
    (["--dataset", "mtg-jamendo", "--n-tags", "10"], "--n-tags applies to MTAT's vocabularies"),
    (["--dataset", "mtg-jamendo", "--jamendo-quality", "full"], "low-quality audio only"),
    (["--dataset", "mtg-jamendo", "--synthetic-clips", "100"], "--synthetic-clips size the MTAT stand-in"),
    (["--dataset", "mtg-jamendo", "--data", "/nonexistent", "--synthetic-tracks", "5"], "(--data synthetic) only"),
    (["--dataset", "mtg-jamendo", "--data", "/nonexistent"], "no MTG-Jamendo split folders"),
])
def test_bad_combinations_stop_with_one_line_before_any_data(argv, expected, capsys, tmp_path):
    _one_line_error(capsys, ["--model", "mel_cnn", "--logger", "none", "--run-dir", str(tmp_path / "r"), *argv],
                    expected, tmp_path / "cache")


def test_unknown_split_or_subset_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        run.main(["--model", "mel_cnn", "--dataset", "mtg-jamendo", "--jamendo-split", "7"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:  # a value out of the declared range, refused the same way
        run.main(["--model", "mel_cnn", "--dataset", "mtg-jamendo", "--excerpt-seconds", "0"])
    assert exit_.value.code == 2 and "argument --excerpt-seconds: must be > 0, got 0" in capsys.readouterr().err


def test_new_options_at_their_defaults_leave_run_digests_unchanged():
    values = RunOptions(model="mel_cnn").to_dict()
    for name in ("dataset", "jamendo_split", "jamendo_subset", "jamendo_quality", "jamendo_meta", "excerpt_seconds",
                 "jamendo_clip_samples", "synthetic_tracks", "synthetic_min_seconds", "synthetic_max_seconds"):
        assert name not in values
    assert RunOptions(model="mel_cnn", dataset="mtg-jamendo").to_dict()["dataset"] == "mtg-jamendo"


# ---------------------------------------------------------------- chunks of tracks
def _store(tmp_path, lengths) -> Path:
    """A ragged store of tracks whose sample k is k % 30000 (so a read shows where it started)."""
    def decoder(path):
        n = int(Path(path).name)
        yield (np.arange(n) % 30000).astype(np.int16)
    folder = tmp_path / "store"
    write_ragged_store(folder, [(str(i), f"/nowhere/{n}") for i, n in enumerate(lengths)], decoder=decoder,
                       fingerprint_extra="test-ramp")
    return folder


def test_evaluation_chunks_spread_over_the_whole_track_and_short_tracks_are_zero_padded(tmp_path):
    lengths = [20_000, 1_000, 5_000]
    folder = _store(tmp_path, lengths)
    layout = SegmentLayout(2_000, 4, "random")
    store = open_store(folder)
    data = SegmentDataset(folder, np.arange(3), np.eye(3), store.lengths, layout, random_crop=False, seed=0)
    assert len(data) == 12
    starts = [data.start(i) for i in range(4)]
    assert starts == [0, 6000, 12000, 18000]  # first at the start, last ends at the track's end
    assert data[3]["waveform"].numpy()[-1] == 19_999 and data[3]["segment"].item() == 3
    short = data[4]["waveform"].numpy()  # a 1,000-sample track: every chunk at 0, zero-padded
    assert [data.start(i) for i in range(4, 8)] == [0, 0, 0, 0]
    assert np.array_equal(short[:1000], np.arange(1000)) and not short[1000:].any()
    assert data[9]["clip"].item() == 2 and np.array_equal(data[9]["target"].numpy(), [0, 0, 1])
    # Where the segment fits, the spread is MTAT's.
    assert np.array_equal(layout.track_starts(20_000), layout.starts(20_000))


def test_training_chunks_start_anywhere_and_follow_from_seed_epoch_and_item(tmp_path):
    folder = _store(tmp_path, [50_000, 3_000])
    store = open_store(folder)
    layout = SegmentLayout(4_000, 1, "random")
    data = SegmentDataset(folder, np.arange(2), np.eye(2), store.lengths, layout, random_crop=True, seed=3)
    starts = [data.start(0, epoch) for epoch in range(200)]
    assert min(starts) >= 0 and max(starts) <= 46_000
    assert max(starts) - min(starts) > 30_000  # the whole track, not its middle
    assert starts == [data.start(0, epoch) for epoch in range(200)]  # a resumed run reads the same chunks
    again = SegmentDataset(folder, np.arange(2), np.eye(2), store.lengths, layout, random_crop=True, seed=4)
    assert starts != [again.start(0, epoch) for epoch in range(200)]
    assert data.start(1, 5) == 0 and len(data[(1, 5)]["waveform"]) == 4_000  # shorter than a chunk: padded
    first = data[(0, 7)]["waveform"].numpy()
    assert np.array_equal(first, (np.arange(4_000) + data.start(0, 7)) % 30000)
    # Won's epoch (won2020's --random-crops-per-clip 1): one chunk per track, whatever evaluation averages
    won = SegmentLayout(4_000, 8, "random", random_crops=1)
    train = SegmentDataset(folder, np.arange(2), np.eye(2), store.lengths, won, random_crop=True, seed=3)
    evaluation = SegmentDataset(folder, np.arange(2), np.eye(2), store.lengths, won, random_crop=False, seed=3)
    assert (len(train), len(evaluation)) == (2, 16) and train[(1, 0)]["clip"].item() == 1


# ---------------------------------------------------------------- the real metadata
@pytest.mark.skipif(not (SHARED_JAMENDO / "splits").is_dir(),
                    reason=f"real MTG-Jamendo metadata not found at {SHARED_JAMENDO} (../shared beside the clone)")
def test_reader_on_the_real_split_0_sorts_tracks_and_keeps_parts_and_labels(tmp_path):
    reader = JamendoReader(tmp_path, meta_dir=SHARED_JAMENDO)
    clips = reader.read()
    official = read_split(SHARED_JAMENDO, 0, "top50tags")
    assert len(clips.clip_ids) == len(official) == 32_136 + 10_888 + 11_356
    assert np.all(np.diff(clips.clip_ids) > 0)
    rows = clips.split("0")
    assert [len(rows[s]) for s in ("train", "valid", "test")] == [32_136, 10_888, 11_356]
    vocabulary = clips.vocabulary("top50tags", 50)
    assert len(vocabulary) == 50 and vocabulary.tags == official.tags
    by_id = {int(t.split("_")[1]): i for i, t in enumerate(official.track_ids)}
    for row in (0, 1000, len(clips.clip_ids) - 1):
        assert np.array_equal(vocabulary.labels[row], official.targets[by_id[int(clips.clip_ids[row])]])
    assert clips.audio_paths[0].endswith(".low.mp3")
    with pytest.raises(ConfigError):
        clips.split("1")


# ---------------------------------------------------------------- end to end on the stand-in
@pytest.fixture(scope="module")
def jamendo_cache(tmp_path_factory) -> Path:
    """A stand-in of this file's own, whose tracks the store test breaks."""
    return tmp_path_factory.mktemp("jamendo-cache")


@pytest.mark.slow
def test_the_store_is_prepared_once_and_records_skipped_tracks(jamendo_cache, tmp_path):
    from experiments.data import prepare_data_once
    from experiments.resolve import build_datamodule, resolve

    options = run.parse_options([*JAMENDO_STAND_IN_ARGS, "--model", "mel_cnn", *TINY_MEL_ARGS["mel_cnn"],
                                 "--cache-dir", str(jamendo_cache)])
    datamodule = build_datamodule(resolve(options))
    datamodule.reader.prepare(progress=False)
    clips = datamodule.reader.read()
    root = datamodule.reader.audio_root()
    # Break two tracks before the store exists: one missing, one empty.
    (root / clips.audio_paths[0]).unlink()
    (root / clips.audio_paths[1]).write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = prepare_data_once(datamodule)
    messages = [str(w.message) for w in caught if "tracks skipped" in str(w.message)]
    assert len(messages) == 1 and "2 of 24 tracks skipped" in messages[0]
    assert info.clip_samples == TINY_CLIP_SAMPLES and info.tags[0].startswith("genre---")
    store = open_store(datamodule.cache_dir)
    assert [e.status for e in store.index[:2]] == ["missing", "empty"]
    assert all(e.status == "ok" for e in store.index[2:])
    lengths = store.lengths[2:]
    assert lengths.min() >= 4 * 16_000 and lengths.max() <= 8 * 16_000 and len(set(lengths.tolist())) > 5
    manifest = (datamodule.cache_dir / "manifest.json").stat().st_mtime_ns
    prepare_data_once(datamodule)  # a second run finds the store done
    assert (datamodule.cache_dir / "manifest.json").stat().st_mtime_ns == manifest
    datamodule.setup()
    used = np.concatenate([datamodule.dataset(s).rows for s in ("train", "valid", "test")])
    assert 0 not in used and 1 not in used and len(used) == 22


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_trains_and_tests_on_the_stand_in(name, cache_dir, tmp_path, capsys, cpu_variant):
    cpu_variant(name)
    run_dir = tmp_path / name
    # JAMENDO_STAND_IN_ARGS's tracks and store in the session's cache: generated and decoded once (test_jamendo_paths.py too)
    argv = [*JAMENDO_STAND_IN_ARGS, "--cache-dir", str(cache_dir), "--model", name, *small_model_args(name),
            "--max-epochs", "1", "--limit-train-batches", "2", "--batch-size", "4", "--eval-batch-size", "64",
            "--run-dir", str(run_dir)]
    assert run.main(argv) == 0, capsys.readouterr().err
    metrics = read_metrics(run_dir)["test"]
    config = json.loads((run_dir / "config.json").read_text())
    layout = config["resolved"]["layout"]
    assert layout["train_crop"] == "random"
    if MODELS[name].frame_samples is not None:  # chunk models read their own chunk, 16 (8) averaged per track
        assert layout["segment_samples"] == MODELS[name].frame_samples
        args = small_model_args(name)
        given = int(args[args.index("--segments-per-clip") + 1]) if "--segments-per-clip" in args else None
        expected = given or MODELS[name].segments_per_clip or -(-TINY_CLIP_SAMPLES // MODELS[name].frame_samples)
        assert layout["segments_per_clip"] == expected
    assert metrics["n_clips"] > 0 and 0.0 <= metrics["roc_auc"] <= 1.0
    if name == "short_chunk_cnn":  # evaluating the checkpoint gives the run's test metrics
        assert run.main(["--evaluate", str(run_dir), "--run-dir", str(tmp_path / "ev"), "--no-progress",
                         "--num-workers", "0"]) == 0
        evaluated = read_metrics(tmp_path / "ev")["test"]
        assert evaluated["roc_auc"] == pytest.approx(metrics["roc_auc"], abs=1e-7)
        assert evaluated["pr_auc"] == pytest.approx(metrics["pr_auc"], abs=1e-7)
        assert evaluated["n_clips"] == metrics["n_clips"]


def test_download_with_dataset_mtg_jamendo_fetches_its_archives(tmp_path, capsys):
    # No archive at this mirror: every one of the 100 fails, in one line naming them (MTAT's files are not asked for).
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    assert run.main(["--download", str(tmp_path / "jamendo"), "--dataset", "mtg-jamendo", "--download-url",
                     mirror.as_uri() + "/", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "MTG-Jamendo download into" in err
    assert "100 of 100 archives failed" in err and "raw_30s_audio-low-00.tar" in err


@pytest.mark.slow
def test_a_folder_as_distributed_with_excerpts_trains_through_the_same_path(cache_dir, tmp_path, capsys):
    # JAMENDO_STAND_IN_ARGS's folder read as a real MTG-Jamendo folder (JamendoReader), keeping the middle 5 s of each track.
    from datamodules.datasets.jamendo.standin import generate_synthetic_jamendo, synthetic_jamendo_dir_name

    folder = generate_synthetic_jamendo(cache_dir / synthetic_jamendo_dir_name(24, 0, 4, 8), n_tracks=24,
                                        min_seconds=4, max_seconds=8, progress=False)  # generated once per session
    cache = tmp_path / "cache"
    argv = ["--dataset", "mtg-jamendo", "--data", str(folder), "--excerpt-seconds", "5",
            "--jamendo-clip-samples", str(TINY_CLIP_SAMPLES), "--num-workers", "0", "--no-progress", "--no-figures",
            "--logger", "none", "--cache-dir", str(cache), "--model", "mel_cnn", *TINY_MEL_ARGS["mel_cnn"],
            "--max-epochs", "1", "--limit-train-batches", "2", "--batch-size", "4", "--run-dir", str(tmp_path / "run")]
    assert run.main(argv) == 0, capsys.readouterr().err
    (store_dir,) = (cache / "tracks").iterdir()
    store = open_store(store_dir)
    assert store.manifest["excerpt_samples"] == 80_000 and "excerpt80000" in store_dir.name
    assert store.lengths.max() == 80_000 and store.lengths.min() >= 4 * 16_000
    assert read_metrics(tmp_path / "run")["test"]["n_clips"] > 0
