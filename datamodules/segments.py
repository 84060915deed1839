"""Where in a clip the model looks: segment length, segments per clip, and their offsets.

A model sees fixed-length segments of a clip. Evaluation always takes a deterministic set of
`segments_per_clip` segments spread evenly over the clip, and averages their predictions per
clip. Training takes either those same segments (`train_crop="fixed"`, the paper's LSTM recipe:
every segment is an example with the clip's labels) or, as often, random crops of the same
length (`train_crop="random"`), `segments_per_clip` of them per clip in an epoch unless `random_crops`
says how many.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from infrastructure.errors import ConfigError

TRAIN_CROPS = ("fixed", "random")


@dataclass(frozen=True)
class SegmentLayout:
    """Segment length in samples, segments per clip, and how training picks them."""

    segment_samples: int
    segments_per_clip: int = 1
    train_crop: str = "fixed"
    random_crops: int | None = None
    """Random crops per clip in each training epoch (None: `segments_per_clip`). Won et al.'s loaders draw
    one per clip, so their epoch is one look at each clip whatever the evaluation averages."""

    def __post_init__(self) -> None:
        if self.segment_samples <= 0:
            raise ConfigError(f"segment length must be positive, got {self.segment_samples} samples")
        if self.segments_per_clip < 1:
            raise ConfigError(f"segments per clip must be at least 1, got {self.segments_per_clip}")
        if self.train_crop not in TRAIN_CROPS:
            raise ConfigError(f"unknown train crop {self.train_crop!r}; choose one of {', '.join(TRAIN_CROPS)}")
        if self.random_crops is not None:
            if self.random_crops < 1:
                raise ConfigError(f"random crops per clip must be at least 1, got {self.random_crops}")
            if self.train_crop != "random":
                raise ConfigError("--random-crops-per-clip applies to --train-crop random; this model trains on fixed "
                                  f"segments here (the {self.segments_per_clip} evaluation segment(s) of each clip): add "
                                  "--train-crop random, or drop --random-crops-per-clip")

    def items_per_clip(self, random_crop: bool) -> int:
        """Dataset items per clip: the training crops of a random-crop training set, else the evaluation segments."""
        if random_crop and self.random_crops is not None:
            return self.random_crops
        return self.segments_per_clip

    def check_fits(self, clip_samples: int) -> None:
        """Raise ConfigError when a segment is longer than the dataset's clips."""
        if self.segment_samples > clip_samples:
            raise ConfigError(
                f"segments of {self.segment_samples} samples do not fit in this dataset's clips of "
                f"{clip_samples} samples"
            )

    def starts(self, clip_samples: int) -> np.ndarray:
        """Start offsets (int64, length `segments_per_clip`) of the evaluation segments.

        One segment is centred; several are spread evenly from the clip's start to its end, so the
        first starts at 0 and the last ends at the clip's last sample.
        """
        self.check_fits(clip_samples)
        room = clip_samples - self.segment_samples
        if self.segments_per_clip == 1:
            return np.array([room // 2], dtype=np.int64)
        k = np.arange(self.segments_per_clip, dtype=np.float64)
        return np.round(k * room / (self.segments_per_clip - 1)).astype(np.int64)

    def track_starts(self, track_samples: int) -> np.ndarray:
        """Start offsets of the evaluation segments of a track of ``track_samples`` (any length).

        The same spread as `starts` (which it equals whenever the segment fits), for datasets whose
        tracks differ in length (MTG-Jamendo): a track shorter than a segment gets every segment at
        0, and the reader zero-pads it to the segment length.
        """
        room = max(0, int(track_samples) - self.segment_samples)
        if self.segments_per_clip == 1:
            return np.array([room // 2], dtype=np.int64)
        k = np.arange(self.segments_per_clip, dtype=np.float64)
        return np.round(k * room / (self.segments_per_clip - 1)).astype(np.int64)

    def to_dict(self) -> dict:
        """The layout as saved in hparams and config.json; `random_crops` only when set, so that the layouts of runs
        made before it existed compare equal to today's."""
        values = asdict(self)
        if values["random_crops"] is None:
            del values["random_crops"]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> SegmentLayout:
        return cls(**values)

    @classmethod
    def for_mel_frames(cls, clip_samples: int, hop_length: int, segments_per_clip: int,
                       train_crop: str = "fixed", random_crops: int | None = None) -> SegmentLayout:
        """Split the whole clip's Mel frames into `segments_per_clip` equal parts.

        With centred framing a clip of L samples has L // hop + 1 frames; each segment gets
        F = (L // hop + 1) // n of them, and a segment of (F - 1) * hop samples yields exactly F
        frames. For MTAT (465,984 samples), hop 512 and 4 segments this gives the paper's 227
        frames per segment (911 frames // 4, 115,712 samples per segment); with hop 1792 and one
        segment, the 261 frames of Table 2.
        """
        if hop_length <= 0:
            raise ConfigError(f"hop length must be positive, got {hop_length}")
        if segments_per_clip < 1:
            raise ConfigError(f"segments per clip must be at least 1, got {segments_per_clip}")
        frames = (clip_samples // hop_length + 1) // segments_per_clip
        if frames < 2:
            raise ConfigError(
                f"hop {hop_length} over {segments_per_clip} segments of a {clip_samples}-sample clip "
                f"leaves {frames} Mel frame(s) per segment; use a smaller hop or fewer segments"
            )
        return cls((frames - 1) * hop_length, segments_per_clip, train_crop, random_crops)
