"""Segment layouts and the epoch-seeded, rank-aware sampler."""

from types import SimpleNamespace

import numpy as np
import pytest

from datamodules.datamodule import SegmentDataset
from datamodules.sampling import EpochSampler
from datamodules.segments import SegmentLayout
from infrastructure.audio import MTAT_CLIP_SAMPLES
from infrastructure.errors import ConfigError


def test_lstm_layout_gives_the_papers_227_frames():
    layout = SegmentLayout.for_mel_frames(MTAT_CLIP_SAMPLES, hop_length=512, segments_per_clip=4)
    assert layout.segment_samples == 226 * 512
    assert layout.segment_samples // 512 + 1 == 227  # centred framing
    starts = layout.starts(MTAT_CLIP_SAMPLES)
    assert starts[0] == 0 and starts[-1] + layout.segment_samples == MTAT_CLIP_SAMPLES
    assert np.all(np.diff(starts) >= layout.segment_samples)  # four segments that do not overlap


def test_mel_cnn_layout_gives_table_2s_261_frames():
    layout = SegmentLayout.for_mel_frames(MTAT_CLIP_SAMPLES, hop_length=1792, segments_per_clip=1)
    assert layout.segment_samples // 1792 + 1 == 261
    assert layout.starts(MTAT_CLIP_SAMPLES).tolist() == [(MTAT_CLIP_SAMPLES - layout.segment_samples) // 2]


def test_layout_errors_are_clear():
    with pytest.raises(ConfigError, match="do not fit"):
        SegmentLayout(100, 2).starts(50)
    with pytest.raises(ConfigError, match="frame"):
        SegmentLayout.for_mel_frames(1000, hop_length=2000, segments_per_clip=4)
    with pytest.raises(ConfigError, match="train crop"):
        SegmentLayout(10, 1, "sideways")
    with pytest.raises(ConfigError, match="applies to --train-crop random"):
        SegmentLayout(10, 4, "fixed", random_crops=1)
    with pytest.raises(ConfigError, match="at least 1"):
        SegmentLayout(10, 4, "random", random_crops=0)


def _clips_dataset(layout: SegmentLayout, random_crop: bool, seed: int = 5) -> SegmentDataset:
    waveforms = (np.arange(3)[:, None] * 10_000 + np.arange(8_000)[None, :]).astype(np.int16)  # clip c: c*1e4 + t
    data = SegmentDataset("/unused", np.arange(3), np.eye(3, dtype=np.float32), np.full(3, 8_000), layout, random_crop,
                          seed)
    data._store = SimpleNamespace(segment=lambda row, start, length: waveforms[row, start:start + length])
    return data


def test_random_crops_per_clip_set_the_training_epoch_and_leave_evaluation_alone():
    won = SegmentLayout(1_000, 16, "random", random_crops=1)
    train, evaluation = _clips_dataset(won, True), _clips_dataset(won, False)
    assert len(train) == 3 and len(evaluation) == 48  # one crop per clip per epoch; 16 segments averaged
    for item in range(3):
        crops = {int(train[(item, epoch)]["waveform"][0]) - 10_000 * item for epoch in range(20)}
        assert train[(item, 0)]["clip"].item() == item and min(crops) >= 0 and max(crops) <= 7_000
        assert len(crops) > 10  # a new place in the clip every epoch
    assert [int(train[(1, e)]["waveform"][0]) for e in range(5)] == [int(train[(1, e)]["waveform"][0]) for e in range(5)]
    two = _clips_dataset(SegmentLayout(1_000, 16, "random", random_crops=2), True)
    assert len(two) == 6 and [two[(i, 0)]["clip"].item() for i in range(6)] == [0, 0, 1, 1, 2, 2]
    # unset: as many crops as evaluation segments, each drawn exactly as before the option existed
    old = _clips_dataset(SegmentLayout(1_000, 16, "random"), True)
    room = 8_000 - 1_000
    assert len(old) == 48 and int(old[(17, 3)]["waveform"][0]) == 10_000 + int(
        np.random.default_rng([5, 3, 17]).integers(0, room + 1))
    # saved layouts: the new key only when set, so earlier runs' layouts compare equal to today's
    assert "random_crops" not in SegmentLayout(1_000, 16, "random").to_dict()
    assert SegmentLayout.from_dict(won.to_dict()) == won


def test_training_sampler_is_a_function_of_seed_and_epoch():
    a = EpochSampler(50, shuffle=True, pad=True, seed=3)
    b = EpochSampler(50, shuffle=True, pad=True, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert [i for i, _ in a] != [i for i, _ in b]
    assert sorted(i for i, _ in a) == list(range(50))
    assert all(epoch == 4 for _, epoch in a)


def test_training_sampler_pads_so_ranks_run_equal_batches():
    ranks = [EpochSampler(11, shuffle=True, pad=True, seed=0, rank=r, world_size=4) for r in range(4)]
    lengths = [len(list(s)) for s in ranks]
    assert lengths == [3, 3, 3, 3] and all(len(s) == 3 for s in ranks)
    covered = {i for s in ranks for i, _ in s}
    assert covered == set(range(11))


def test_evaluation_sampler_covers_every_item_once_across_ranks():
    ranks = [EpochSampler(11, shuffle=False, pad=False, seed=0, rank=r, world_size=4) for r in range(4)]
    items = [i for s in ranks for i, _ in s]
    assert sorted(items) == list(range(11))  # no padded duplicates
    assert [len(s) for s in ranks] == [3, 3, 3, 2]
