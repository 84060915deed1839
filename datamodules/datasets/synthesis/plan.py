"""The plan of a synthetic clip: what plays, and what the annotators wrote.

Every clip is drawn from (seed, clip index) alone: a `ClipPlan` (genre, tempo, level,
instruments, voice) is sampled first, the annotation is derived from the plan, then the audio is
rendered from the plan (`datamodules.datasets.synthesis.render`). All 50 standard top-50 tag names are
used, so both tag vocabularies of the suite find their columns; synonyms (female / woman /
female vocal / female voice, ...) are different annotators' words for one audible concept, as
in MTAT.

The label statistics imitate MTAT's: multi-label (typically 2-6 tags per tagged clip),
imbalanced (guitar the most frequent tag), genre-instrument correlations, annotations that miss
some audible concepts, and some clips with no tag at all (`NO_TAG_PROBABILITY`). docs/data.md gives
the measured figures; tests/unit/datamodules/datasets/mtat/test_standin.py checks their ranges and that the tags are
learnable from the audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TAGS: tuple[str, ...] = (
    "no voice", "harpsichord", "classical", "sitar", "female", "male vocal", "vocals", "beats",
    "quiet", "guitar", "electronic", "soft", "ambient", "new age", "synth", "drums", "loud",
    "techno", "indian", "beat", "rock", "fast", "piano", "violin", "male", "flute", "strings",
    "opera", "vocal", "woman", "solo", "slow", "harp", "cello", "female vocal", "dance", "weird",
    "no vocals", "man", "singing", "pop", "choir", "male voice", "female voice", "classic",
    "metal", "country", "no vocal", "voice", "choral",
)
"""The 50 tag columns of the synthetic annotations_final.csv, in file order (every name is one
of the standard MTAT top-50 tags)."""


GENRES: dict[str, float] = {
    "classical": 0.20, "techno": 0.10, "rock": 0.09, "ambient": 0.065, "electronic": 0.05,
    "pop": 0.05, "indian": 0.05, "opera": 0.045, "new age": 0.035, "dance": 0.03, "choral": 0.035,
    "country": 0.03, "weird": 0.03, "metal": 0.03, "folk": 0.06, "other": 0.1,
}
"""Probability of each generated style ("folk" and "other" emit no genre tag)."""

INSTRUMENTS = ("guitar", "eguitar", "piano", "harpsichord", "harp", "sitar", "tanpura", "violin",
               "cello", "strings", "flute", "synth", "pad", "bass", "synth_bass", "bleeps")
"""Instrument parts `render_clip` can play."""

VOICES = ("female", "male", "opera_female", "opera_male", "choir")
"""Voice parts `render_clip` can sing."""

DRUM_PATTERNS = ("rock", "pop", "four", "breaks", "metal", "boom_chick", "tabla", "glitch")
"""Percussion patterns `render_clip` can play."""

TEMPO_RANGES = {"slow": (55.0, 78.0), "medium": (88.0, 128.0), "fast": (140.0, 185.0)}
"""BPM range of each tempo class."""

NO_TAG_PROBABILITY = 0.12
"""Share of clips whose annotators wrote nothing (the audio is still rendered)."""


@dataclass(frozen=True)
class ClipPlan:
    """What one synthetic clip contains and how it was annotated.

    Attributes:
        genre: one of `GENRES`.
        tempo_class: "slow", "medium" or "fast"; tempo: the BPM (within `TEMPO_RANGES`).
        level: "quiet", "normal" or "loud".
        drums: a `DRUM_PATTERNS` name or None.
        parts: instrument parts (`INSTRUMENTS`), lead first.
        voice: a `VOICES` name or None.
        reverb: wet level of the reverb-like smear (0 = dry).
        key: MIDI note of the tonic; mode: scale name ("major", "minor", "raga", "pentatonic",
            "chromatic").
        tags: the annotation, a subset of `TAGS` in `TAGS` order.
    """

    genre: str
    tempo_class: str
    tempo: float
    level: str
    drums: str | None
    parts: tuple[str, ...]
    voice: str | None
    reverb: float
    key: int
    mode: str
    tags: tuple[str, ...]


def _pick(rng: np.random.Generator, options: dict):
    """One key of ``options`` drawn with the (unnormalised) probabilities in its values."""
    keys = list(options)
    p = np.asarray([options[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _plan_content(rng: np.random.Generator, genre: str) -> dict:
    """The audible content of a clip of ``genre`` (everything of `ClipPlan` but the tags)."""
    u = rng.random
    tempo = {"slow": 1.0, "medium": 1.0, "fast": 1.0}
    level = {"quiet": 0.1, "normal": 0.85, "loud": 0.05}
    drums, voice, reverb, mode = None, None, 0.0, _pick(rng, {"major": 0.55, "minor": 0.45})
    parts: list[str] = []
    if genre == "classical":
        tempo = {"slow": 0.4, "medium": 0.4, "fast": 0.2}
        level = {"quiet": 0.25, "normal": 0.74, "loud": 0.01}
        reverb = float(rng.uniform(0.25, 0.4))  # a concert hall
        ensemble = _pick(rng, {"piano": 0.22, "harpsichord": 0.17, "strings": 0.25, "violin": 0.1,
                               "cello": 0.07, "flute": 0.1, "harp": 0.05, "guitar": 0.04})
        if ensemble == "piano":
            parts = ["piano"]
        elif ensemble == "harpsichord":
            parts = ["harpsichord"] + (["strings"] if u() < 0.25 else []) + (["flute"] if u() < 0.15 else [])
        elif ensemble == "strings":
            parts = ["strings"] + (["cello"] if u() < 0.3 else []) + (["violin"] if u() < 0.3 else [])
        elif ensemble == "violin":
            parts = ["violin", "piano"] if u() < 0.7 else ["violin"]
        elif ensemble == "cello":
            parts = ["cello", "piano"] if u() < 0.5 else ["cello"]
        elif ensemble == "flute":
            parts = ["flute", _pick(rng, {"harp": 0.35, "harpsichord": 0.25, "strings": 0.4})]
        else:
            parts = [ensemble]
    elif genre in ("techno", "dance"):
        tempo = {"slow": 0.0, "medium": 0.5, "fast": 0.5} if genre == "techno" else {"medium": 0.8, "fast": 0.2}
        level = {"quiet": 0.02, "normal": 0.78, "loud": 0.2}
        drums = "four"
        parts = ["synth", "synth_bass"] + (["pad"] if u() < 0.3 else [])
        if genre == "dance" and u() < 0.55:
            voice = "female" if u() < 0.75 else "male"
        elif genre == "techno" and u() < 0.08:
            voice = "female"
        mode = "minor"
    elif genre == "electronic":
        tempo = {"slow": 0.25, "medium": 0.5, "fast": 0.25}
        drums = "breaks" if u() < 0.6 else None
        parts = ["synth"] + (["pad"] if u() < 0.6 else []) + (["synth_bass"] if u() < 0.5 else [])
        voice = "female" if u() < 0.12 else None
        reverb = 0.2 if u() < 0.4 else 0.0
    elif genre == "rock":
        tempo = {"slow": 0.12, "medium": 0.55, "fast": 0.33}
        level = {"quiet": 0.02, "normal": 0.68, "loud": 0.3}
        drums = "rock"
        parts = ["eguitar", "bass"] + (["guitar"] if u() < 0.2 else []) + (["piano"] if u() < 0.1 else [])
        voice = _pick(rng, {"male": 0.55, "female": 0.15, None: 0.3})
    elif genre == "metal":
        tempo = {"medium": 0.2, "fast": 0.8}
        level = {"normal": 0.45, "loud": 0.55}
        drums = "metal"
        parts = ["eguitar", "bass"]
        voice = "male" if u() < 0.6 else None
    elif genre in ("ambient", "new age"):
        tempo = {"slow": 0.85, "medium": 0.15}
        level = {"quiet": 0.3, "normal": 0.7}
        reverb = 0.45
        parts = ["pad"]
        if genre == "new age":
            parts += [_pick(rng, {"piano": 0.35, "harp": 0.25, "flute": 0.25, "guitar": 0.15})]
            voice = "female" if u() < 0.1 else None
        else:
            parts += (["flute"] if u() < 0.15 else []) + (["piano"] if u() < 0.15 else [])
            drums = "breaks" if u() < 0.08 else None
    elif genre == "pop":
        tempo = {"slow": 0.1, "medium": 0.7, "fast": 0.2}
        level = {"quiet": 0.03, "normal": 0.85, "loud": 0.12}
        drums = "pop"
        parts = ["bass"]
        parts = ([_pick(rng, {"guitar": 0.45, "piano": 0.3, "synth": 0.25})] + parts
                 + (["synth"] if u() < 0.25 else []))
        voice = _pick(rng, {"female": 0.55, "male": 0.35, None: 0.1})
    elif genre == "indian":
        tempo = {"slow": 0.35, "medium": 0.45, "fast": 0.2}
        drums = "tabla" if u() < 0.7 else None
        parts = ["sitar", "tanpura"] + (["flute"] if u() < 0.1 else [])
        voice = _pick(rng, {"male": 0.2, "female": 0.2, None: 0.6})
        mode = "raga"
    elif genre == "opera":
        tempo = {"slow": 0.5, "medium": 0.4, "fast": 0.1}
        level = {"quiet": 0.05, "normal": 0.85, "loud": 0.1}
        voice = "opera_female" if u() < 0.6 else "opera_male"
        parts = [_pick(rng, {"strings": 0.6, "piano": 0.4})]
        reverb = 0.3
    elif genre == "choral":
        tempo = {"slow": 0.6, "medium": 0.4}
        level = {"quiet": 0.2, "normal": 0.8}
        voice = "choir"
        parts = ["strings"] if u() < 0.3 else []
        reverb = 0.45
    elif genre == "country":
        tempo = {"medium": 0.65, "fast": 0.35}
        drums = "boom_chick" if u() < 0.8 else None
        parts = ["guitar", "bass"] + (["violin"] if u() < 0.5 else [])
        voice = _pick(rng, {"male": 0.6, "female": 0.3, None: 0.1})
        mode = "major"
    elif genre == "weird":
        tempo = {"slow": 0.3, "medium": 0.4, "fast": 0.3}
        drums = "glitch" if u() < 0.4 else None
        parts = ["bleeps"] + (["pad"] if u() < 0.3 else [])
        mode = "chromatic"
    elif genre == "folk":
        tempo = {"slow": 0.3, "medium": 0.55, "fast": 0.15}
        level = {"quiet": 0.15, "normal": 0.85}
        parts = ["guitar"] + (["flute"] if u() < 0.2 else []) + (["violin"] if u() < 0.2 else [])
        voice = _pick(rng, {"male": 0.5, "female": 0.4, None: 0.1})
        mode = "pentatonic" if u() < 0.3 else mode
    else:  # "other": a random small band, no genre tag
        pool = ["guitar", "piano", "harp", "violin", "cello", "flute", "synth", "harpsichord", "sitar"]
        count = 1 if u() < 0.5 else 2
        parts = [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]
        if u() < 0.3:
            drums = _pick(rng, {"rock": 0.4, "pop": 0.3, "breaks": 0.3})
        voice = _pick(rng, {"female": 0.15, "male": 0.15, None: 0.7})
        tempo = {"slow": 0.3, "medium": 0.5, "fast": 0.2}
        reverb = 0.2 if u() < 0.3 else 0.0
    tempo_class = _pick(rng, tempo)
    low, high = TEMPO_RANGES[tempo_class]
    return dict(genre=genre, tempo_class=tempo_class, tempo=float(rng.uniform(low, high)),
                level=_pick(rng, level), drums=drums, parts=tuple(parts), voice=voice,
                reverb=float(reverb), key=int(rng.integers(45, 57)), mode=mode)


# Probability that an annotator writes each tag when the concept is audible.
_INSTRUMENT_TAGS = {
    "guitar": {"guitar": 0.78}, "eguitar": {"guitar": 0.7}, "piano": {"piano": 0.75},
    "harpsichord": {"harpsichord": 0.8}, "harp": {"harp": 0.7}, "sitar": {"sitar": 0.75},
    "violin": {"violin": 0.7, "strings": 0.2}, "cello": {"cello": 0.65, "strings": 0.2},
    "strings": {"strings": 0.75, "violin": 0.2}, "flute": {"flute": 0.75},
    "synth": {"synth": 0.45}, "pad": {"synth": 0.15}, "bleeps": {"synth": 0.15},
}
_GENRE_TAGS = {
    "classical": {"classical": 0.82, "classic": 0.22}, "techno": {"techno": 0.85, "electronic": 0.5, "dance": 0.2},
    "dance": {"dance": 0.75, "techno": 0.35, "electronic": 0.4, "pop": 0.15},
    "electronic": {"electronic": 0.8, "techno": 0.1}, "rock": {"rock": 0.8}, "metal": {"metal": 0.8, "rock": 0.4},
    "ambient": {"ambient": 0.75, "electronic": 0.2, "new age": 0.1}, "new age": {"new age": 0.7, "ambient": 0.3},
    "pop": {"pop": 0.7}, "indian": {"indian": 0.85}, "opera": {"opera": 0.85, "classical": 0.35},
    "choral": {"choral": 0.55, "choir": 0.6, "classical": 0.3}, "country": {"country": 0.75},
    "weird": {"weird": 0.75, "electronic": 0.25},
}
_VOICE_TAGS = {
    "female": {"female": 0.5, "woman": 0.4, "female vocal": 0.3, "female voice": 0.25, "vocal": 0.3,
               "vocals": 0.25, "singing": 0.3, "voice": 0.15},
    "male": {"male": 0.5, "man": 0.35, "male vocal": 0.4, "male voice": 0.3, "vocal": 0.3,
             "vocals": 0.3, "singing": 0.25, "voice": 0.15},
    "opera_female": {"female": 0.3, "woman": 0.2, "female vocal": 0.15, "female voice": 0.15,
                     "singing": 0.35, "vocal": 0.15, "voice": 0.1},
    "opera_male": {"male": 0.3, "man": 0.2, "male vocal": 0.15, "male voice": 0.15, "singing": 0.35,
                   "vocal": 0.15, "voice": 0.1},
    "choir": {"choir": 0.5, "choral": 0.35, "vocals": 0.1, "singing": 0.15, "voice": 0.1},
}
_NO_VOICE_TAGS = {"no vocals": 0.18, "no vocal": 0.16, "no voice": 0.1}
"""Written for instrumental clips of genres where a voice would be expected (pop, rock, electronic
music); other instrumental clips get them with a third of these probabilities."""
_VOICE_EXPECTED = {"techno", "dance", "electronic", "rock", "metal", "pop", "country", "folk", "other"}
_SOLO_INSTRUMENTS = {"guitar", "piano", "harpsichord", "harp", "sitar", "violin", "cello", "flute"}
"""A clip with one of these alone (no drums, no voice) can be annotated 'solo'."""
_DRUM_TAGS = {"drums": 0.45, "beat": 0.15, "beats": 0.1}
_ELECTRONIC_BEAT_TAGS = {"beat": 0.35, "beats": 0.15, "drums": 0.25}


def _annotate(rng: np.random.Generator, content: dict) -> tuple[str, ...]:
    """The tags annotators wrote for a clip with ``content`` (see `_plan_content`)."""
    probs: dict[str, float] = {}

    def offer(table: dict, scale: float = 1.0) -> None:
        for tag, p in table.items():
            probs[tag] = 1.0 - (1.0 - probs.get(tag, 0.0)) * (1.0 - p * scale)

    genre = content["genre"]
    offer(_GENRE_TAGS.get(genre, {}))
    for part in dict.fromkeys(content["parts"]):
        offer(_INSTRUMENT_TAGS.get(part, {}))
    drums = content["drums"]
    if drums is not None:
        offer(_ELECTRONIC_BEAT_TAGS if drums in ("four", "breaks", "glitch") else _DRUM_TAGS)
    voice = content["voice"]
    if voice is not None:
        offer(_VOICE_TAGS[voice])
    else:
        offer(_NO_VOICE_TAGS, 1.0 if genre in _VOICE_EXPECTED else 1 / 3)
    tempo_class = content["tempo_class"]
    if tempo_class == "fast":
        offer({"fast": 0.55})
    elif tempo_class == "slow":
        offer({"slow": 0.5})
    level = content["level"]
    if level == "loud":
        offer({"loud": 0.75})
    elif level == "quiet":
        offer({"quiet": 0.6, "soft": 0.5})
    if len(content["parts"]) == 1 and content["parts"][0] in _SOLO_INSTRUMENTS and drums is None and voice is None:
        offer({"solo": 0.25})
    draws = rng.random(len(TAGS))
    if rng.random() < NO_TAG_PROBABILITY:
        return ()
    return tuple(t for t, d in zip(TAGS, draws) if d < probs.get(t, 0.0))


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of clip ``index`` of a dataset with ``seed`` (independent streams)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def plan_clip(seed: int, index: int, rng: np.random.Generator | None = None) -> ClipPlan:
    """The `ClipPlan` of clip ``index``: genre, content and tags, without rendering audio.

    ``rng`` (default: a fresh `clip_rng(seed, index)`) is advanced; `synthesize_clip` passes its
    own so the audio is drawn from the same stream after the plan.
    """
    rng = clip_rng(seed, index) if rng is None else rng
    genre = _pick(rng, GENRES)
    content = _plan_content(rng, genre)
    tags = _annotate(rng, content)
    return ClipPlan(tags=tags, **content)
