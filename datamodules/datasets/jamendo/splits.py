"""Read MTG-Jamendo's split TSVs as distributed (``MTG/mtg-jamendo-dataset``, ``data/splits/``).

MTG-Jamendo (Bogdanov et al. 2019) is 55,701 full-length Creative Commons tracks with 195 tags
in three categories (genre, instrument, mood/theme). Its metadata repository publishes five
random splits (``split-0`` .. ``split-4``) of four subsets; every split set is three files::

    splits/split-<k>/autotagging_<subset>-train.tsv
    splits/split-<k>/autotagging_<subset>-validation.tsv
    splits/split-<k>/autotagging_<subset>-test.tsv

with subsets `SUBSETS` (``top50tags``: the 50 most frequent tags, what Won et al. 2020 and later
work report on split 0; ``genre``, ``instrument``, ``moodtheme``: one category each). A file is
tab-separated with CRLF line ends (the published files have them; LF is accepted too), header
``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS``, and one row per track::

    track_0000241  artist_000005  album_000033  41/241.mp3  340.1  genre---rock  instrument---piano

from the sixth column on one tag per column (as many as the track has, at least one), each
``category---tag``. PATH is relative to the audio root; the folder is the track number modulo
100 (two digits), the file name the track number: ``41/241.mp3`` for the full-quality audio,
``41/241.low.mp3`` for the low-quality one (`audio_path`). DURATION is seconds (one decimal).

`read_split` parses one split set into a `JamendoSplit`: track, artist and album ids, relative
paths, durations, a multi-hot target matrix over the sorted tag vocabulary of the set, and which
part (train / validation / test) each track belongs to. It checks everything the rest of the
suite relies on and raises one `DataError` naming the file and line otherwise: a wrong header,
malformed ids, a path that does not match its track id, a non-positive or non-numeric duration,
a row without tags or with a tag outside its category syntax, a track listed twice (in one file
or in two parts of the set).

The same reader serves the generated stand-in (`datamodules.datasets.jamendo.standin`), which writes
these files in exactly this format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infrastructure.errors import ConfigError, DataError

SUBSETS = ("top50tags", "genre", "instrument", "moodtheme")
"""Subsets of the published splits (the ``<subset>`` of ``autotagging_<subset>-<part>.tsv``)."""

SPLITS = (0, 1, 2, 3, 4)
"""Split sets the metadata repository publishes (split 0 is the one results are reported on)."""

PARTS = ("train", "validation", "test")
"""Parts of a split set, in the order of `JamendoSplit.part` codes (0, 1, 2)."""

CATEGORIES = ("genre", "instrument", "mood/theme")
"""Tag categories, as spelt before ``---`` in the TSVs."""

SUBSET_CATEGORY = {"genre": "genre", "instrument": "instrument", "moodtheme": "mood/theme"}
"""The one category a single-category subset holds."""

HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
"""Header row of every split TSV."""

QUALITIES = ("full", "low")
"""Audio qualities: ``full`` (320 kbit/s stereo MP3, ``NN/ID.mp3``), ``low`` (mono VBR MP3,
``NN/ID.low.mp3``)."""

TAG_SEPARATOR = "---"

_TRACK_RE = re.compile(r"^track_(\d{7})$")
_ARTIST_RE = re.compile(r"^artist_\d{6}$")
_ALBUM_RE = re.compile(r"^album_\d{6}$")
_TAG_RE = re.compile(r"^(genre|instrument|mood/theme)---([a-z0-9]+)$")


def split_file_name(subset: str, part: str) -> str:
    """``autotagging_<subset>-<part>.tsv``, the official file name."""
    return f"autotagging_{subset}-{part}.tsv"


def track_number(track_id: str) -> int:
    """The number of ``track_0000241`` (241): it names the audio file and its folder."""
    match = _TRACK_RE.match(track_id)
    if match is None:
        raise ValueError(f"not a track id: {track_id!r}")
    return int(match.group(1))


def track_relative_path(number: int, quality: str = "full") -> str:
    """Relative audio path of track ``number``: folder ``number % 100`` (two digits), e.g.
    ``41/241.mp3`` (full quality) or ``41/241.low.mp3`` (low quality)."""
    if quality not in QUALITIES:
        raise ConfigError(f"MTG-Jamendo audio quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
    suffix = ".low.mp3" if quality == "low" else ".mp3"
    return f"{number % 100:02d}/{number}{suffix}"


def audio_path(tsv_path: str, quality: str = "full") -> str:
    """The TSV's PATH (always the full-quality name) spelt for ``quality``."""
    if quality not in QUALITIES:
        raise ConfigError(f"MTG-Jamendo audio quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
    return tsv_path[: -len(".mp3")] + ".low.mp3" if quality == "low" else tsv_path


def find_splits_dir(meta_dir: str | Path) -> Path:
    """The folder holding ``split-<k>/`` under ``meta_dir``: ``meta_dir/splits``,
    ``meta_dir/data/splits`` (a clone of the metadata repository) or ``meta_dir`` itself.

    Raises:
        DataError: when none of them holds a ``split-<k>`` folder.
    """
    meta_dir = Path(meta_dir)
    for candidate in (meta_dir / "splits", meta_dir / "data" / "splits", meta_dir):
        if candidate.is_dir() and any(candidate.glob("split-[0-9]")):
            return candidate
    raise DataError(
        f"{meta_dir}: no MTG-Jamendo split folders (expected splits/split-0/ or data/splits/split-0/ "
        "from the MTG/mtg-jamendo-dataset repository)"
    )


@dataclass(frozen=True)
class JamendoRow:
    """One parsed TSV row (`read_tsv`)."""

    track_id: str
    artist_id: str
    album_id: str
    path: str
    duration: float
    tags: tuple[str, ...]


def read_tsv(path: str | Path) -> list[JamendoRow]:
    """Parse one split TSV; every problem is a `DataError` naming ``path`` and the line.

    Checks the header, the id syntax, that PATH is ``NN/<number>.mp3`` for the row's track,
    a positive finite DURATION, at least one ``category---tag`` per row with no repeats, and that
    no track appears twice in the file.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read MTG-Jamendo split file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError(f"{path}: empty file; expected the header {' '.join(HEADER)}")

    def fail(line_no: int, message: str) -> DataError:
        return DataError(f"{path}, line {line_no}: {message}")

    header = tuple(lines[0].removesuffix("\r").split("\t"))
    if header != HEADER:
        raise fail(1, f"header is {' '.join(header)!r}, expected {' '.join(HEADER)!r} (tab-separated)")
    rows: list[JamendoRow] = []
    seen: dict[str, int] = {}
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.removesuffix("\r").split("\t")
        if len(fields) < 6:
            raise fail(line_no, f"{len(fields)} tab-separated fields, expected TRACK_ID ARTIST_ID ALBUM_ID "
                                "PATH DURATION and at least one tag")
        track_id, artist_id, album_id, rel_path, duration_text = fields[:5]
        tags = tuple(fields[5:])
        match = _TRACK_RE.match(track_id)
        if match is None:
            raise fail(line_no, f"TRACK_ID {track_id!r} is not track_ and 7 digits")
        if not _ARTIST_RE.match(artist_id):
            raise fail(line_no, f"ARTIST_ID {artist_id!r} is not artist_ and 6 digits")
        if not _ALBUM_RE.match(album_id):
            raise fail(line_no, f"ALBUM_ID {album_id!r} is not album_ and 6 digits")
        expected_path = track_relative_path(int(match.group(1)))
        if rel_path != expected_path:
            raise fail(line_no, f"PATH {rel_path!r} does not match {track_id} (expected {expected_path!r})")
        try:
            duration = float(duration_text)
        except ValueError:
            raise fail(line_no, f"DURATION {duration_text!r} is not a number") from None
        if not np.isfinite(duration) or duration <= 0:
            raise fail(line_no, f"DURATION {duration_text!r} is not a positive number of seconds")
        for tag in tags:
            if not _TAG_RE.match(tag):
                raise fail(line_no, f"tag {tag!r} is not category---name with category one of "
                                    f"{', '.join(CATEGORIES)} (empty column or stray whitespace?)")
        if len(set(tags)) != len(tags):
            raise fail(line_no, f"{track_id} lists a tag twice: {' '.join(tags)}")
        if track_id in seen:
            raise fail(line_no, f"{track_id} is listed again (first on line {seen[track_id]})")
        seen[track_id] = line_no
        rows.append(JamendoRow(track_id, artist_id, album_id, rel_path, duration, tags))
    if not rows:
        raise DataError(f"{path}: no tracks after the header")
    return rows


@dataclass(frozen=True)
class JamendoSplit:
    """One split set of one subset (e.g. split 0 of ``top50tags``), tracks in file order
    (train, then validation, then test).

    Attributes:
        split: the split set number; subset: the subset name.
        track_ids, artist_ids, album_ids: (n,) str arrays.
        paths: (n,) relative full-quality paths as in the TSV (`audio_path` for low quality).
        durations: (n,) float64 seconds, as in the TSV.
        tags: the tag vocabulary, sorted (``category---tag``), the columns of ``targets``.
        targets: (n, len(tags)) uint8 multi-hot.
        part: (n,) int8, index into `PARTS` (0 train, 1 validation, 2 test).
        files: the three TSVs read, in `PARTS` order.
    """

    split: int
    subset: str
    track_ids: np.ndarray
    artist_ids: np.ndarray
    album_ids: np.ndarray
    paths: np.ndarray
    durations: np.ndarray
    tags: tuple[str, ...]
    targets: np.ndarray
    part: np.ndarray
    files: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.track_ids)

    def indices(self, part: str) -> np.ndarray:
        """Row indices of the tracks of ``part`` (``train``, ``validation`` or ``test``)."""
        if part not in PARTS:
            raise ConfigError(f"MTG-Jamendo part must be one of {', '.join(PARTS)}, got {part!r}")
        return np.flatnonzero(self.part == PARTS.index(part))

    def audio_paths(self, quality: str = "full") -> list[str]:
        """Relative audio paths for ``quality`` (``full``: ``NN/ID.mp3``, ``low``: ``NN/ID.low.mp3``)."""
        return [audio_path(p, quality) for p in self.paths]

    def tag_counts(self, part: str | None = None) -> dict[str, int]:
        """Tracks per tag, over ``part`` or the whole set."""
        rows = self.targets if part is None else self.targets[self.indices(part)]
        return dict(zip(self.tags, rows.sum(axis=0, dtype=np.int64).tolist()))


def read_split(meta_dir: str | Path, split: int = 0, subset: str = "top50tags") -> JamendoSplit:
    """Parse split set ``split`` of ``subset`` from the metadata folder ``meta_dir``
    (see `find_splits_dir`).

    Beyond `read_tsv`'s per-file checks: no track in two parts of the set, and, for the
    single-category subsets, only tags of that category.

    Raises:
        ConfigError: unknown ``split`` or ``subset``.
        DataError: a missing file, or the first problem found, naming the file and line.
    """
    if isinstance(split, bool) or split not in SPLITS:
        raise ConfigError(f"MTG-Jamendo split must be one of {', '.join(map(str, SPLITS))}, got {split!r}")
    if subset not in SUBSETS:
        raise ConfigError(f"MTG-Jamendo tag subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
    folder = find_splits_dir(meta_dir) / f"split-{split}"
    files = tuple(folder / split_file_name(subset, part) for part in PARTS)
    for path in files:
        if not path.is_file():
            raise DataError(f"{path}: missing MTG-Jamendo split file (split {split}, subset {subset})")
    rows: list[JamendoRow] = []
    part_codes: list[int] = []
    first_seen: dict[str, tuple[Path, int]] = {}
    category = SUBSET_CATEGORY.get(subset)
    for code, path in enumerate(files):
        for line_no, row in enumerate(read_tsv(path), start=2):
            if row.track_id in first_seen:
                other, other_line = first_seen[row.track_id]
                raise DataError(f"{path}, line {line_no}: {row.track_id} is also in {other.name} "
                                f"(line {other_line}): a track must be in one part of a split only")
            first_seen[row.track_id] = (path, line_no)
            if category is not None:
                stray = [t for t in row.tags if t.split(TAG_SEPARATOR, 1)[0] != category]
                if stray:
                    raise DataError(f"{path}, line {line_no}: tag {stray[0]!r} is not a {category} tag, "
                                    f"but this is the {subset} subset")
            rows.append(row)
            part_codes.append(code)
    tags = tuple(sorted({t for row in rows for t in row.tags}))
    column = {t: i for i, t in enumerate(tags)}
    targets = np.zeros((len(rows), len(tags)), dtype=np.uint8)
    for i, row in enumerate(rows):
        targets[i, [column[t] for t in row.tags]] = 1
    return JamendoSplit(
        split=split,
        subset=subset,
        track_ids=np.array([r.track_id for r in rows]),
        artist_ids=np.array([r.artist_id for r in rows]),
        album_ids=np.array([r.album_id for r in rows]),
        paths=np.array([r.path for r in rows]),
        durations=np.array([r.duration for r in rows], dtype=np.float64),
        tags=tags,
        targets=targets,
        part=np.array(part_codes, dtype=np.int8),
        files=files,
    )
