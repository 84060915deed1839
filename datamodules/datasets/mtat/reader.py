"""Reading MagnaTagATune (MTAT) as it is distributed: annotations, audio layout, tag
vocabularies and train/valid/test splits.

What lives here
---------------
* `read_annotations` parses ``annotations_final.csv`` (tab-separated, every field
  double-quoted, CRLF line ends; columns ``clip_id``, one 0/1 column per raw tag, ``mp3_path``)
  into an `MTATAnnotations`. It is generic in the number of tag columns, so the synthetic
  stand-in dataset (50 tag columns, in its own order) reads the same way as the real file (188).
* `find_audio_root` and `dataset_clip_samples` describe where a dataset's MP3s live and how long
  its clips are.
* `MTATReader` (an MTAT folder) and `SyntheticMTATReader` (the generated stand-in, generated on
  first use) are what the data module reads MTAT-layout datasets through
  (`datamodules.datasets.base.DatasetReader`); `mtat_reader` picks one for a ``--data`` value.
* `build_vocabulary` turns the raw tag matrix into the tag set a model is trained on
  (`TAG_VOCABULARIES`):

  - ``paper``: the vocabulary of the reproduced paper. Synonyms and misspellings are merged
    (`PAPER_SYNONYM_GROUPS`; a clip has the merged tag if it has any member; the merged tag is
    named after the group's first member), then the ``n_tags`` most frequent merged tags are
    kept (ties broken by name).
  - ``standard``: the unmerged top-50 list of the literature (Lee et al. 2017, Won et al. 2020),
    `STANDARD_TOP50_TAGS`, in that order.

* `split_rows` gives the row indices of each split (`SPLITS`):

  - ``folder`` (the default, and the paper's): MP3 folders ``0``-``b`` train, ``c`` valid,
    ``d``-``f`` test. It works on any dataset with the MTAT folder layout, the synthetic one
    included. Real MTAT: 18,709 / 1,825 / 5,329 clips.
  - ``clean``: the lists shipped in ``datamodules/datasets/mtat/splits/clean_{train,valid,test}.txt`` (the
    folder split restricted to clips with at least one standard top-50 tag, without the three
    zero-byte MP3s and clips 29, 11268, 11269). Real MTAT only: 15,244 / 1,529 / 4,332 clips.

Numbers on the real file, and how they differ from the paper
------------------------------------------------------------
The real ``annotations_final.csv`` has 25,863 clips and 188 raw tags (the paper says 25,860
songs and 190 tags, apparently counting the ``clip_id`` and ``mp3_path`` columns as tags). Raw ``guitar`` has 4,852 clips
(paper: 4,851) and the 50th most frequent raw tag is ``choral`` with 490.

With the 29 synonym groups below, the 188 raw tags merge into **135** tags, and the 50 most
frequent merged tags hold **88.5 %** of the labels. The paper reports 125 tags and 90 %. Its
exact merge list is not published (it only gives the example classical/clasical/classic), so
the groups here are our reading of "similar and redundant" tags; merging ten more tags would
reproduce 125, but we do not invent merges to hit the number.

Coverage definition (the one that gives 88.5 %): the number of positive (clip, merged tag)
pairs whose tag is among the kept ``n_tags``, divided by the number of all positive
(clip, merged tag) pairs. Both counts are taken after merging, so a clip tagged ``guitar`` and
``guitars`` counts once. Other readings give other numbers on the same vocabulary: counted on
raw (unmerged) pairs it is 78.0 %; as the share of tagged clips having at least one kept tag it
is 98.7 %. `label_coverage` computes the 88.5 % definition.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.datasets.base import STAGES as SPLIT_STAGES
from datamodules.datasets.base import Vocabulary
from datamodules.datasets.mtat.standin import (
    DEFAULT_N_CLIPS,
    METADATA_FILE,
    ensure_synthetic_mtat,
    read_metadata,
    synthetic_dir_name,
)
from infrastructure.audio import MTAT_CLIP_SAMPLES
from infrastructure.errors import ConfigError, DataError

TAG_VOCABULARIES = ("paper", "standard")
"""Names accepted by `build_vocabulary`."""

SPLITS = ("folder", "clean")
"""Names accepted by `split_rows`; ``folder`` is the default (the paper's split)."""

DEFAULT_SPLIT = "folder"
"""The split used unless the user asks otherwise: the paper's, and valid for any MTAT layout."""

HEX_FOLDERS = tuple("0123456789abcdef")
"""The sixteen sub-folders the MTAT MP3s are spread over."""

FOLDER_SPLIT = {
    "train": tuple("0123456789ab"),
    "valid": ("c",),
    "test": ("d", "e", "f"),
}
"""Which MP3 folders form each stage of the ``folder`` split."""

CLEAN_SPLIT_DIR = Path(__file__).resolve().parent / "splits"
"""Folder holding the shipped ``clean_{train,valid,test}.txt`` lists (package data)."""

PAPER_SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("beat", "beats"),
    ("chant", "chanting"),
    ("choir", "choral"),
    ("classical", "clasical", "classic"),
    ("drum", "drums"),
    ("electro", "electronic", "electronica", "electric"),
    ("fast", "fast beat", "quick"),
    ("female", "female singer", "female singing", "female vocals", "female voice",
     "woman", "woman singing", "women"),
    ("flute", "flutes"),
    ("guitar", "guitars"),
    ("hard", "hard rock"),
    ("harpsichord", "harpsicord"),
    ("heavy", "heavy metal", "metal"),
    ("horn", "horns"),
    ("india", "indian"),
    ("jazz", "jazzy"),
    ("male", "male singer", "male vocal", "male vocals", "male voice",
     "man", "man singing", "men"),
    ("no beat", "no drums"),
    ("no singer", "no singing", "no vocal", "no vocals", "no voice", "no voices",
     "instrumental"),
    ("opera", "operatic"),
    ("orchestra", "orchestral"),
    ("quiet", "silence"),
    ("singer", "singing"),
    ("space", "spacey"),
    ("string", "strings"),
    ("synth", "synthesizer"),
    ("violin", "violins"),
    ("vocal", "vocals", "voice", "voices"),
    ("strange", "weird"),
)
"""Synonym groups merged by the ``paper`` vocabulary; each merged tag is named after the
group's first member. Members absent from a dataset are ignored; a group none of whose
members exists does not produce a tag."""

STANDARD_TOP50_TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock",
    "fast", "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian",
    "opera", "male", "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet",
    "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats",
    "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)
"""The unmerged top-50 MTAT tags used by Lee et al. 2017 and Won et al. 2020, in their order
(identical to ``standard_top50_tags.txt`` of the MTAT metadata in ``../shared/mtat`` beside the clone)."""

_CLIP_ID_COLUMN = "clip_id"
_MP3_PATH_COLUMN = "mp3_path"


@dataclass(frozen=True, eq=False)
class MTATAnnotations:
    """The tag matrix of an MTAT-layout dataset, one row per clip in file order.

    Attributes:
        clip_ids: (N,) int64, the ``clip_id`` column.
        mp3_paths: N paths relative to the audio root, e.g. ``"f/artist-album-01-title-0-29.mp3"``.
        tag_names: the raw tag names in file column order (188 for real MTAT).
        labels: (N, len(tag_names)) uint8 matrix of 0/1 raw labels.
        source: the file the annotations were read from.
    """

    clip_ids: np.ndarray
    mp3_paths: tuple[str, ...]
    tag_names: tuple[str, ...]
    labels: np.ndarray
    source: Path

    def __len__(self) -> int:
        return len(self.mp3_paths)


def read_annotations(path: str | Path) -> MTATAnnotations:
    """Parse an ``annotations_final.csv`` file (any number of tag columns).

    Raises:
        DataError: naming the file, when it is missing or unreadable, lacks the ``clip_id`` or
            ``mp3_path`` column, has a line with the wrong number of fields (line number given),
            a label other than 0/1 (line and column given), a non-integer or duplicate clip id,
            an empty mp3 path, or no data rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotations file not found")
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            return _parse_annotations(csv.reader(handle, delimiter="\t"), path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read annotations: {exc}") from exc


def _parse_annotations(reader, path: Path) -> MTATAnnotations:
    """Parse rows from a csv reader; see `read_annotations` for the checks."""
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: file is empty (no header line)")
    for required in (_CLIP_ID_COLUMN, _MP3_PATH_COLUMN):
        if required not in header:
            raise DataError(f"{path}: header has no '{required}' column")
    id_col = header.index(_CLIP_ID_COLUMN)
    path_col = header.index(_MP3_PATH_COLUMN)
    tag_cols = [i for i in range(len(header)) if i not in (id_col, path_col)]
    tag_names = tuple(header[i] for i in tag_cols)
    if len(set(tag_names)) != len(tag_names):
        dupes = sorted({t for t in tag_names if tag_names.count(t) > 1})
        raise DataError(f"{path}: duplicate tag columns in header: {dupes}")
    n_cols = len(header)
    n_tags = len(tag_cols)
    tags_contiguous = tag_cols == list(range(tag_cols[0], tag_cols[0] + n_tags)) if n_tags else True
    first_tag = tag_cols[0] if n_tags else 0

    clip_ids: list[int] = []
    mp3_paths: list[str] = []
    label_text: list[str] = []
    seen_ids: dict[int, int] = {}
    for fields in reader:
        line = reader.line_num
        if len(fields) != n_cols:
            raise DataError(f"{path}: line {line} has {len(fields)} fields, header has {n_cols}")
        try:
            clip_id = int(fields[id_col])
        except ValueError:
            raise DataError(f"{path}: line {line}: clip_id {fields[id_col]!r} is not an integer") from None
        if clip_id in seen_ids:
            raise DataError(f"{path}: line {line}: duplicate clip_id {clip_id} (first on line {seen_ids[clip_id]})")
        seen_ids[clip_id] = line
        mp3_path = fields[path_col]
        if not mp3_path:
            raise DataError(f"{path}: line {line}: empty mp3_path")
        if tags_contiguous:
            tag_fields = fields[first_tag:first_tag + n_tags]
        else:
            tag_fields = [fields[i] for i in tag_cols]
        joined = "".join(tag_fields)
        # Every field a single '0' or '1' <=> the joined text has n_tags characters, all 0/1.
        if len(joined) != n_tags or joined.strip("01"):
            for col_pos, value in zip(tag_cols, tag_fields):
                if value not in ("0", "1"):
                    raise DataError(
                        f"{path}: line {line}, column {col_pos + 1} ('{header[col_pos]}'): "
                        f"label {value!r} is not 0 or 1"
                    )
        clip_ids.append(clip_id)
        mp3_paths.append(mp3_path)
        label_text.append(joined)
    if not clip_ids:
        raise DataError(f"{path}: no data rows after the header")
    labels = (np.frombuffer("".join(label_text).encode("ascii"), dtype=np.uint8) - ord("0"))
    labels = labels.reshape(len(clip_ids), n_tags).copy()
    return MTATAnnotations(
        clip_ids=np.asarray(clip_ids, dtype=np.int64),
        mp3_paths=tuple(mp3_paths),
        tag_names=tag_names,
        labels=labels,
        source=path,
    )


def find_audio_root(data_dir: str | Path) -> Path:
    """Return the folder that holds the ``0``..``f`` MP3 sub-folders of a dataset.

    Looks at ``DATA_DIR/mp3/`` first (where ``--download`` unpacks), then at ``DATA_DIR``
    itself (the zip unpacked in place). A candidate qualifies if it holds at least one of the
    sixteen hex sub-folders (a small dataset need not use all of them).

    Raises:
        DataError: when neither location holds any of the sub-folders.
    """
    data_dir = Path(data_dir)
    for candidate in (data_dir / "mp3", data_dir):
        if any((candidate / h).is_dir() for h in HEX_FOLDERS):
            return candidate
    raise DataError(
        f"{data_dir}: no MP3 folders found: expected sub-folders 0..f in {data_dir / 'mp3'} "
        f"or in {data_dir} itself (download the dataset with --download)"
    )


def dataset_clip_samples(data_dir: str | Path) -> int:
    """Clip length in samples of the dataset in ``data_dir``.

    The synthetic generator writes ``DATA_DIR/synthetic.json`` with key ``clip_samples``; when
    that file exists its value is used, otherwise the real MTAT length `MTAT_CLIP_SAMPLES`.

    Raises:
        DataError: when ``synthetic.json`` exists but is unreadable or lacks a positive integer
            ``clip_samples``.
    """
    meta = read_metadata(data_dir)
    if meta is None:
        return MTAT_CLIP_SAMPLES
    value = meta.get("clip_samples")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DataError(f"{Path(data_dir) / METADATA_FILE}: 'clip_samples' must be a positive integer, got {value!r}")
    return value


def merged_tag_matrix(annotations: MTATAnnotations) -> tuple[tuple[str, ...], np.ndarray]:
    """Merge the raw tags by `PAPER_SYNONYM_GROUPS`.

    Returns:
        ``(names, labels)``: every merged tag (135 on real MTAT), ordered by decreasing number
        of positive clips with ties broken by name, and the (N, len(names)) uint8 label matrix.
    """
    raw_index = {name: i for i, name in enumerate(annotations.tag_names)}
    grouped: set[str] = set()
    columns: dict[str, np.ndarray] = {}
    for group in PAPER_SYNONYM_GROUPS:
        grouped.update(group)
        members = [raw_index[t] for t in group if t in raw_index]
        if members:
            columns[group[0]] = annotations.labels[:, members].max(axis=1)
    for name, i in raw_index.items():
        if name not in grouped:
            columns[name] = annotations.labels[:, i]
    names = sorted(columns, key=lambda n: (-int(columns[n].sum()), n))
    if not names:
        return (), np.zeros((len(annotations), 0), dtype=np.uint8)
    labels = np.stack([columns[n] for n in names], axis=1).astype(np.uint8)
    return tuple(names), labels


def label_coverage(labels_all: np.ndarray, n_kept: int) -> float:
    """Share of all positive (clip, tag) pairs that fall in the first ``n_kept`` columns.

    ``labels_all`` is a label matrix whose columns are ordered most frequent first (as returned
    by `merged_tag_matrix`). This is the coverage definition that gives 88.5 % for the paper
    vocabulary on real MTAT; see the module docstring.
    """
    total = int(labels_all.sum())
    if total == 0:
        return 0.0
    return int(labels_all[:, :n_kept].sum()) / total


def build_vocabulary(annotations: MTATAnnotations, name: str, n_tags: int = 50) -> Vocabulary:
    """Build the tag vocabulary ``name`` (one of `TAG_VOCABULARIES`) with at most ``n_tags`` tags.

    ``paper`` merges synonyms then keeps the ``n_tags`` most frequent merged tags (ties by name).
    ``standard`` takes `STANDARD_TOP50_TAGS` in order, drops tags the dataset lacks, and keeps
    the first ``n_tags``. A dataset with fewer tags than asked keeps all it has. Tags are kept
    even if no clip carries them: a macro ROC-AUC must leave out tags without positives.

    Raises:
        ConfigError: unknown vocabulary name, ``n_tags`` < 1, or no tag of the vocabulary
            exists in the dataset.
    """
    if isinstance(n_tags, bool) or not isinstance(n_tags, int) or n_tags < 1:
        raise ConfigError(f"n_tags must be a positive integer, got {n_tags!r}")
    if name == "paper":
        names, labels = merged_tag_matrix(annotations)
        tags, labels = names[:n_tags], labels[:, :n_tags]
    elif name == "standard":
        raw_index = {t: i for i, t in enumerate(annotations.tag_names)}
        tags = tuple(t for t in STANDARD_TOP50_TAGS if t in raw_index)[:n_tags]
        labels = annotations.labels[:, [raw_index[t] for t in tags]]
    else:
        raise ConfigError(f"unknown tag vocabulary {name!r}; choose one of: {', '.join(TAG_VOCABULARIES)}")
    if not tags:
        raise ConfigError(
            f"tag vocabulary {name!r}: none of its tags exists in {annotations.source}"
        )
    return Vocabulary(name=name, tags=tuple(tags), labels=np.ascontiguousarray(labels, dtype=np.uint8))


def _mp3_folder(mp3_path: str) -> str:
    """The top-level folder of a relative MP3 path (``"f/x.mp3"`` -> ``"f"``)."""
    return mp3_path.replace("\\", "/").split("/", 1)[0]


def load_clean_lists(split_dir: Path = CLEAN_SPLIT_DIR) -> dict[str, frozenset[str]]:
    """Read the shipped ``clean_{train,valid,test}.txt`` lists (one mp3 path per line).

    Raises:
        DataError: when a list file is missing or unreadable.
    """
    lists = {}
    for stage in SPLIT_STAGES:
        list_path = split_dir / f"clean_{stage}.txt"
        try:
            text = list_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{list_path}: cannot read the clean split list: {exc}") from exc
        lists[stage] = frozenset(line.strip() for line in text.splitlines() if line.strip())
    return lists


def split_rows(annotations: MTATAnnotations, name: str = DEFAULT_SPLIT) -> dict[str, np.ndarray]:
    """Row indices (int64, ascending) of each stage of split ``name`` (one of `SPLITS`).

    ``folder`` (default, the paper's): MP3 folders 0-b train, c valid, d-f test; works on any
    MTAT-layout dataset. ``clean``: rows whose mp3_path is in the shipped clean lists; real MTAT
    only.

    Returns:
        ``{"train": rows, "valid": rows, "test": rows}``.

    Raises:
        ConfigError: unknown split name, or ``clean`` on a dataset none of whose paths is in the
            clean lists (e.g. the synthetic dataset).
        DataError: ``folder`` on a dataset with an MP3 path outside the 0..f folders.
    """
    paths = annotations.mp3_paths
    if name == "folder":
        stage_of = {folder: stage for stage, folders in FOLDER_SPLIT.items() for folder in folders}
        stages = []
        for row, p in enumerate(paths):
            stage = stage_of.get(_mp3_folder(p))
            if stage is None:
                raise DataError(
                    f"{annotations.source}: row {row} (clip {annotations.clip_ids[row]}): mp3_path {p!r} "
                    "is not inside one of the folders 0..f, so the folder split cannot place it"
                )
            stages.append(stage)
        stage_arr = np.asarray(stages)
        return {s: np.flatnonzero(stage_arr == s).astype(np.int64) for s in SPLIT_STAGES}
    if name == "clean":
        lists = load_clean_lists()
        result = {
            stage: np.asarray([i for i, p in enumerate(paths) if p in members], dtype=np.int64)
            for stage, members in lists.items()
        }
        if not any(len(rows) for rows in result.values()):
            raise ConfigError(
                f"split 'clean' applies to the real MagnaTagATune only: none of the mp3 paths in "
                f"{annotations.source} is in the clean lists; use the 'folder' split"
            )
        return result
    raise ConfigError(f"unknown split {name!r}; choose one of: {', '.join(SPLITS)}")


# ------------------------------------------------------------------------------------------------
# The data module's view of an MTAT-layout dataset (datamodules.datasets.base.DatasetReader)
# ------------------------------------------------------------------------------------------------
ANNOTATIONS_FILE = "annotations_final.csv"

SYNTHETIC = "synthetic"
"""The ``--data`` value that selects the generated stand-in."""


class MTATClips:
    """The clips of an MTAT-layout dataset (`datamodules.datasets.base.Clips`): its annotations, one row per clip."""

    def __init__(self, annotations: MTATAnnotations):
        self.annotations = annotations
        self.clip_ids = annotations.clip_ids
        self.audio_paths = annotations.mp3_paths

    def vocabulary(self, name: str, n_tags: int) -> Vocabulary:
        return build_vocabulary(self.annotations, name, n_tags)

    def split(self, name: str) -> dict[str, np.ndarray]:
        return split_rows(self.annotations, name)


class MTATReader:
    """An MTAT folder as distributed (annotations_final.csv and the MP3 folders 0-f), or laid out like one."""

    vocabularies = TAG_VOCABULARIES
    splits = SPLITS

    def __init__(self, data_dir: str | Path):
        self._data_dir = data_dir

    @property
    def data_dir(self) -> Path:
        return Path(self._data_dir).expanduser().resolve()

    def prepare(self, *, progress: bool) -> None:
        """Nothing to do: the folder is read as it is (``--download`` fetches it)."""

    def read(self) -> MTATClips:
        path = self.data_dir / ANNOTATIONS_FILE
        if not path.is_file():
            raise DataError(f"{path}: annotations file not found (is {self.data_dir} an MTAT folder?)")
        return MTATClips(read_annotations(path))

    def audio_root(self) -> Path:
        return find_audio_root(self.data_dir)

    def clip_samples(self) -> int:
        return dataset_clip_samples(self.data_dir)


class SyntheticMTATReader(MTATReader):
    """The generated stand-in in ``cache_root`` (`datamodules.datasets.mtat.standin`), generated by `prepare` on first use."""

    def __init__(self, cache_root: str | Path, n_clips: int = DEFAULT_N_CLIPS, clip_samples: int = MTAT_CLIP_SAMPLES,
                 seed: int = 0):
        self.cache_root = Path(cache_root)
        self.n_clips, self.synthetic_clip_samples, self.seed = n_clips, clip_samples, seed
        super().__init__(self.cache_root / synthetic_dir_name(n_clips, clip_samples, seed))

    @property
    def data_dir(self) -> Path:
        return Path(self._data_dir)  # inside the cache root, as given (it names the cache folder)

    def clip_samples(self) -> int:
        """The generated clips' length, known before they are generated (their synthetic.json says the same)."""
        return self.synthetic_clip_samples

    def prepare(self, *, progress: bool) -> None:
        generated = ensure_synthetic_mtat(self.cache_root, n_clips=self.n_clips,
                                          clip_samples=self.synthetic_clip_samples, seed=self.seed, progress=progress)
        if Path(generated).resolve() != self.data_dir:
            raise RuntimeError(f"synthetic dataset generated at {generated}, expected {self.data_dir}")


def mtat_reader(data: str | Path, cache_root: str | Path, *, n_clips: int = DEFAULT_N_CLIPS,
                clip_samples: int = MTAT_CLIP_SAMPLES, seed: int = 0) -> MTATReader:
    """The reader of ``--data``: `SyntheticMTATReader` for ``"synthetic"`` (in ``cache_root``), else `MTATReader`."""
    if data == SYNTHETIC:
        return SyntheticMTATReader(cache_root, n_clips, clip_samples, seed)
    return MTATReader(data)
