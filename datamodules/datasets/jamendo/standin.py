"""A generated stand-in for MTG-Jamendo, laid out like the real dataset.

The real audio (156-508 GB) is not available everywhere the suite runs; this folder lets the
MTG-Jamendo code paths run and be tested anywhere, like the synthetic MTAT stand-in
(`datamodules.datasets.mtat.standin`), whose clip planning and rendering it shares
(`datamodules.datasets.synthesis`): every track is a
`ClipPlan` (genre, tempo, level, instruments, voice) drawn with `plan_clip` and rendered with
`render_clip` at the track's own length, so what the tags say is audible in the audio.

Layout written by `generate_synthetic_jamendo(out_dir, ...)`::

    splits/split-<k>/autotagging_<subset>-{train,validation,test}.tsv   k = 0 .. n_splits-1
    NN/<number>.low.mp3        16 kHz mono MP3, NN = number % 100 (folders 00-99)
    synthetic-jamendo.json     parameters and tag vocabulary; written last (= complete)

The TSVs are byte-for-byte in the published format (`datamodules.datasets.jamendo.splits`): tab-separated, CRLF
line ends, header ``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS``, ids ``track_%07d``,
``artist_%06d``, ``album_%06d``, PATH ``NN/<number>.mp3`` (the full-quality name, as in the real
files; the stand-in has only the low-quality audio, so it is read with quality ``low``),
DURATION in seconds with one decimal, tags ``category---tag`` one per column (sorted). Subsets:
``genre``, ``instrument``, ``moodtheme`` hold the tracks with a tag of that category (and only
those tags); ``top50tags`` the 50 most frequent tags (all of them: the vocabulary, `TAGS`, has
fewer). Splits keep artists apart (each artist's tracks are in one part), 60/20/20 % of the
artists, a different assignment per split set, like the real ones.

Tracks last ``min_seconds``..``max_seconds`` (default 20-90 s; the real mean is 244 s), a
whole number of tenths of a second, so DURATION is exact and the MP3 (libsndfile's VBR with a
LAME header) decodes to exactly ``DURATION * 16000`` samples. Track ``i`` depends only on
(seed, i): number ``1000 + 37 * i`` (37 is coprime with 100, so 100 tracks fill the folders
00-99), its plan and audio from `clip_rng(seed, i)` as in `synthesize_clip`, its length and tags
from their own streams.

Cost: MP3 encoding, not rendering, dominates the time to write a stand-in, and it grows with the
minutes of audio. WAV would cost almost nothing to write, but it would not
exercise the MP3 decoding the real data needs, and the real file names end in ``.mp3``; tests keep
tracks short instead (a few seconds).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from datamodules.datasets.jamendo.splits import (
    HEADER,
    PARTS,
    SUBSET_CATEGORY,
    SUBSETS,
    TAG_SEPARATOR,
    split_file_name,
    track_relative_path,
)
from datamodules.datasets.synthesis.generation import StandInFolder, check_option
from datamodules.datasets.synthesis.plan import ClipPlan, clip_rng, plan_clip
from datamodules.datasets.synthesis.render import render_clip
from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError
from infrastructure.io import atomic_path, write_bytes_atomic

GENERATOR_VERSION = 1
METADATA_FILE = "synthetic-jamendo.json"
PARTIAL_FILE = ".synthetic-jamendo-partial.json"
LOCK_FILE = ".synthetic-jamendo.lock"
FOLDER = StandInFolder(title="synthetic MTG-Jamendo", dataset="MTG-Jamendo", metadata_file=METADATA_FILE,
                       partial_file=PARTIAL_FILE, lock_file=LOCK_FILE, unit="tracks", audio_glob="[0-9][0-9]/*.mp3")
"""How the stand-in's folder is generated and reused (`datamodules.datasets.synthesis.generation`)."""

DEFAULT_N_TRACKS = 200
DEFAULT_MIN_SECONDS = 20.0
DEFAULT_MAX_SECONDS = 90.0
DEFAULT_N_SPLITS = 5
PART_SHARES = (0.6, 0.2, 0.2)
"""Share of the artists in train / validation / test."""

# Probability that each tag is written when its concept is audible (an annotation that misses
# some audible concepts, as real tags do).
_GENRE_TAGS = {
    "classical": {"classical": 0.85}, "techno": {"techno": 0.85, "electronic": 0.6},
    "dance": {"dance": 0.8, "electronic": 0.5, "house": 0.3}, "electronic": {"electronic": 0.85},
    "rock": {"rock": 0.85, "alternative": 0.2}, "metal": {"metal": 0.85, "rock": 0.4},
    "ambient": {"ambient": 0.85, "chillout": 0.3, "electronic": 0.2},
    "new age": {"newage": 0.8, "ambient": 0.3, "easylistening": 0.3}, "pop": {"pop": 0.8, "poprock": 0.15},
    "indian": {"world": 0.85}, "opera": {"classical": 0.6, "orchestral": 0.4}, "choral": {"classical": 0.5},
    "country": {"country": 0.8, "folk": 0.3}, "weird": {"experimental": 0.85}, "folk": {"folk": 0.8, "popfolk": 0.2},
}
_INSTRUMENT_TAGS = {
    "guitar": {"acousticguitar": 0.5, "guitar": 0.6}, "eguitar": {"electricguitar": 0.75, "guitar": 0.3},
    "piano": {"piano": 0.8}, "harpsichord": {"harpsichord": 0.8}, "harp": {"harp": 0.7}, "sitar": {"sitar": 0.75},
    "violin": {"violin": 0.7, "strings": 0.2}, "cello": {"cello": 0.65, "strings": 0.2},
    "strings": {"strings": 0.8}, "flute": {"flute": 0.75}, "synth": {"synthesizer": 0.7},
    "pad": {"synthesizer": 0.3}, "bass": {"bass": 0.5}, "synth_bass": {"bass": 0.4, "synthesizer": 0.2},
    "bleeps": {"computer": 0.5, "synthesizer": 0.3},
}
_ACOUSTIC_DRUMS = {"rock", "pop", "metal", "boom_chick", "tabla"}

TAGS: tuple[str, ...] = tuple(sorted(
    {f"genre{TAG_SEPARATOR}{t}" for table in _GENRE_TAGS.values() for t in table}
    | {f"instrument{TAG_SEPARATOR}{t}" for table in _INSTRUMENT_TAGS.values() for t in table}
    | {f"instrument{TAG_SEPARATOR}{t}" for t in ("drums", "drummachine", "voice")}
    | {f"mood/theme{TAG_SEPARATOR}{t}" for t in ("energetic", "calm", "relaxing", "sad", "happy", "meditative",
                                                 "powerful", "film", "dark")}
))
"""Every tag the stand-in can write (sorted; 46 tags: 20 genre, 17 instrument, 9 mood/theme)."""


def _tag_probabilities(plan: ClipPlan) -> dict[str, float]:
    """Probability of each `TAGS` entry for a track with ``plan`` (0 when absent)."""
    probs: dict[str, float] = {}

    def offer(category: str, table: dict) -> None:
        for tag, p in table.items():
            name = f"{category}{TAG_SEPARATOR}{tag}"
            probs[name] = 1.0 - (1.0 - probs.get(name, 0.0)) * (1.0 - p)

    offer("genre", _GENRE_TAGS.get(plan.genre, {}))
    if plan.genre in ("classical", "opera") and "strings" in plan.parts:
        offer("genre", {"orchestral": 0.5})
    for part in dict.fromkeys(plan.parts):
        offer("instrument", _INSTRUMENT_TAGS.get(part, {}))
    if plan.drums is not None:
        offer("instrument", {"drums": 0.7} if plan.drums in _ACOUSTIC_DRUMS else {"drummachine": 0.7})
    if plan.voice is not None:
        offer("instrument", {"voice": 0.75})
    mood: dict[str, float] = {}
    if plan.tempo_class == "fast" and plan.level != "quiet":
        mood["energetic"] = 0.6
    if plan.tempo_class == "slow" or plan.level == "quiet":
        mood.update(calm=0.45, relaxing=0.45)
    if plan.mode == "minor" and plan.tempo_class == "slow":
        mood["sad"] = 0.5
    if plan.mode == "major" and plan.tempo_class != "slow":
        mood["happy"] = 0.45
    if plan.genre in ("ambient", "new age"):
        mood["meditative"] = 0.5
    if plan.level == "loud":
        mood["powerful"] = 0.55
    if plan.reverb >= 0.25 and plan.genre in ("classical", "opera", "choral"):
        mood["film"] = 0.35
    if plan.mode == "chromatic" or (plan.genre == "metal" and plan.mode == "minor"):
        mood["dark"] = 0.5
    offer("mood/theme", mood)
    return probs


def track_tags(seed: int, index: int, plan: ClipPlan) -> tuple[str, ...]:
    """The tags of track ``index`` (sorted), drawn from its plan with their own random stream."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 3]))
    probs = _tag_probabilities(plan)
    draws = rng.random(len(TAGS))
    return tuple(t for t, d in zip(TAGS, draws) if d < probs.get(t, 0.0))


def track_number(index: int) -> int:
    """The MTG-Jamendo track number of stand-in track ``index``."""
    return 1000 + 37 * int(index)


def track_samples(seed: int, index: int, min_seconds: float, max_seconds: float) -> int:
    """Length of track ``index``: a whole number of tenths of a second in [min, max]."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 2]))
    tenths = int(rng.integers(round(min_seconds * 10), round(max_seconds * 10) + 1))
    return tenths * SAMPLE_RATE // 10


def render_track(seed: int, index: int, n_samples: int) -> tuple[ClipPlan, np.ndarray]:
    """Plan and audio of track ``index`` (what `synthesize_clip` gives for a clip of this length)."""
    rng = clip_rng(seed, index)
    plan = plan_clip(seed, index, rng)
    return plan, render_clip(plan, n_samples, rng)


def _artists(n_tracks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Artist and album number per track: artists of 1-8 consecutive tracks, 1-2 albums each."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0, 4]))
    artist = np.empty(n_tracks, dtype=np.int64)
    album = np.empty(n_tracks, dtype=np.int64)
    i = a = b = 0
    while i < n_tracks:
        size = int(rng.integers(1, 9))
        albums = 1 if size < 3 or rng.random() < 0.5 else 2
        for j in range(i, min(n_tracks, i + size)):
            artist[j] = a
            album[j] = b + (0 if albums == 1 or j - i < size // 2 else 1)
        i, a, b = i + size, a + 1, b + albums
    return artist, album


def _split_parts(artist: np.ndarray, seed: int, split: int) -> np.ndarray:
    """Part code (0 train, 1 validation, 2 test) per track for split set ``split``."""
    n_artists = int(artist.max()) + 1
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), split, 5]))
    order = rng.permutation(n_artists)
    cuts = np.round(np.cumsum(PART_SHARES)[:2] * n_artists).astype(int)
    code = np.zeros(n_artists, dtype=np.int8)
    code[order[cuts[0]:cuts[1]]] = 1
    code[order[cuts[1]:]] = 2
    return code[artist]


def _tsv_bytes(rows: list[list[str]]) -> bytes:
    lines = ["\t".join(HEADER)] + ["\t".join(r) for r in rows]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _write_tracks(out_dir: str, seed: int, items: list[tuple[int, int]]) -> int:
    """Render and encode ``(index, n_samples)`` tracks, each MP3 written atomically; returns how many."""
    import soundfile as sf

    for index, n_samples in items:
        _, audio = render_track(seed, index, n_samples)
        with atomic_path(Path(out_dir) / track_relative_path(track_number(index), "low")) as tmp:
            sf.write(tmp, audio, SAMPLE_RATE, format="MP3")
    return len(items)


def generate_synthetic_jamendo(out_dir: str | Path, n_tracks: int = DEFAULT_N_TRACKS, seed: int = 0,
                               min_seconds: float = DEFAULT_MIN_SECONDS, max_seconds: float = DEFAULT_MAX_SECONDS,
                               n_splits: int = DEFAULT_N_SPLITS, workers: int | None = None,
                               progress: bool = True) -> Path:
    """Write the stand-in into ``out_dir`` and return its absolute path.

    A complete folder with the same parameters is left alone; an interrupted generation is
    finished (every MP3 present is whole); one started with other parameters is restarted.

    Raises:
        ConfigError: invalid options, a complete stand-in with other parameters, or a folder
            holding files this generator did not write.
    """
    n_tracks = check_option("n_tracks", n_tracks, 3)
    seed = check_option("seed", seed, 0)
    n_splits = check_option("n_splits", n_splits, 1)
    if n_splits > 5:
        raise ConfigError(f"synthetic MTG-Jamendo option n_splits must be at most 5, got {n_splits}")
    workers = (os.cpu_count() or 1) if workers is None else check_option("workers", workers, 1)
    try:
        min_seconds, max_seconds = float(min_seconds), float(max_seconds)
    except (TypeError, ValueError):
        raise ConfigError(f"synthetic MTG-Jamendo track lengths must be numbers, got {min_seconds!r}, {max_seconds!r}") from None
    if not (0.5 <= min_seconds <= max_seconds):
        raise ConfigError(f"synthetic MTG-Jamendo track lengths need 0.5 <= min_seconds <= max_seconds, "
                          f"got {min_seconds}, {max_seconds}")
    out_dir = Path(out_dir).expanduser().resolve()
    params = {"n_tracks": n_tracks, "seed": seed, "min_seconds": min_seconds, "max_seconds": max_seconds,
              "n_splits": n_splits, "sample_rate": SAMPLE_RATE, "generator_version": GENERATOR_VERSION}
    folders = [out_dir / f"{i:02d}" for i in range(100)]
    with FOLDER.generating(out_dir, n_tracks):
        if not FOLDER.start(out_dir, params, folders + [out_dir / "splits"]):
            return out_dir
        lengths = [track_samples(seed, i, min_seconds, max_seconds) for i in range(n_tracks)]
        plans = [plan_clip(seed, i) for i in range(n_tracks)]
        tags = [track_tags(seed, i, plans[i]) for i in range(n_tracks)]
        artist, album = _artists(n_tracks, seed)
        rows = [[f"track_{track_number(i):07d}", f"artist_{artist[i]:06d}", f"album_{album[i]:06d}",
                 track_relative_path(track_number(i)), f"{lengths[i] / SAMPLE_RATE:.1f}"] for i in range(n_tracks)]
        counts = {t: sum(t in tt for tt in tags) for t in TAGS}
        top50 = set(sorted((t for t in TAGS if counts[t]), key=lambda t: (-counts[t], t))[:50])
        for split in range(n_splits):
            parts = _split_parts(artist, seed, split)
            folder = out_dir / "splits" / f"split-{split}"
            folder.mkdir(parents=True, exist_ok=True)
            for subset in SUBSETS:
                category = SUBSET_CATEGORY.get(subset)
                for code, part in enumerate(PARTS):
                    body = []
                    for i in np.flatnonzero(parts == code):
                        kept = [t for t in tags[i] if (t.split(TAG_SEPARATOR, 1)[0] == category if category else t in top50)]
                        if kept:
                            body.append(rows[i] + kept)
                    if not body:
                        raise ConfigError(f"synthetic MTG-Jamendo: n_tracks={n_tracks} is too few: split {split} "
                                          f"would have no {part} tracks in the {subset} subset")
                    write_bytes_atomic(folder / split_file_name(subset, part), _tsv_bytes(body))

        for folder in folders:
            folder.mkdir(exist_ok=True)
        todo = [(i, lengths[i]) for i in range(n_tracks)
                if not (out_dir / track_relative_path(track_number(i), "low")).is_file()]
        FOLDER.encode(out_dir, _write_tracks, [(str(out_dir), seed, [item]) for item in todo], n_tracks,
                      n_tracks - len(todo), workers=workers if len(todo) >= 4 else 1, progress=progress)
        FOLDER.finish(out_dir, dict(params, tags=list(TAGS), quality="low"))
    return out_dir


def synthetic_jamendo_dir_name(n_tracks: int, seed: int, min_seconds: float, max_seconds: float) -> str:
    """Folder name of a cached stand-in: ``synthetic-jamendo-<n>-<seed>-<min>-<max>-v<version>``."""
    return f"synthetic-jamendo-{n_tracks}-{seed}-{min_seconds:g}-{max_seconds:g}-v{GENERATOR_VERSION}"
