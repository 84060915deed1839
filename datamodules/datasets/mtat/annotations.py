"""Reading MTAT's ``annotations_final.csv``: one row per clip, its id, raw 0/1 tags and MP3 path.

`read_annotations` parses the file (tab-separated, every field double-quoted, CRLF line ends;
columns ``clip_id``, one 0/1 column per raw tag, ``mp3_path``) into an `MTATAnnotations`. It is
generic in the number of tag columns, so the synthetic stand-in (50 tag columns, in its own order)
reads the same way as the real file (188). The vocabularies (`datamodules.datasets.mtat.vocabulary`)
and splits (`datamodules.datasets.mtat.splits`) are built from it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infrastructure.errors import DataError

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
