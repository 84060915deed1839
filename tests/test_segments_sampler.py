"""Segment layouts and the epoch-seeded, rank-aware sampler."""

import numpy as np
import pytest

from datamodules.audio import MTAT_CLIP_SAMPLES
from datamodules.errors import ConfigError
from datamodules.sampling import EpochSampler
from datamodules.segments import SegmentLayout


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
