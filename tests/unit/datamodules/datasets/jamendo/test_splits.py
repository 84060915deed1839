"""Tests of datamodules/datasets/jamendo/splits.py: the real split-0 TSVs of ../shared/mtg-jamendo (skipped,
saying so, where absent) and malformed files written here."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datamodules.datasets.jamendo.splits import (
    HEADER,
    PARTS,
    audio_path,
    find_splits_dir,
    read_split,
    read_tsv,
    split_file_name,
    track_number,
    track_relative_path,
)
from infrastructure.errors import ConfigError, DataError
from tests.support.paths import SHARED_DIR

SHARED_JAMENDO = SHARED_DIR / "mtg-jamendo"

needs_shared = pytest.mark.skipif(
    not (SHARED_JAMENDO / "splits" / "split-0").is_dir(),
    reason=f"real MTG-Jamendo metadata not found at {SHARED_JAMENDO} (../shared beside the clone)",
)

# Published in MTG/mtg-jamendo-dataset, stats/autotagging_top50tags/all.tsv (tracks and artists
# per tag over the whole top-50 subset, i.e. the three parts of a split together).
PUBLISHED_TOP50 = {
    "genre---electronic": (16480, 1546),
    "genre---soundtrack": (8094, 659),
    "instrument---piano": (7750, 866),
    "instrument---voice": (1604, 257),
    "mood/theme---happy": (1657, 266),
    "genre---reggae": (1245, 206),
}


@pytest.fixture(scope="module")
def split0():
    return read_split(SHARED_JAMENDO, split=0, subset="top50tags")


@needs_shared
def test_real_split0_counts(split0):
    # Counts of the files (the shared README states them too): 32,136 / 10,888 / 11,356.
    assert [len(split0.indices(p)) for p in PARTS] == [32136, 10888, 11356]
    assert len(split0.tags) == 50
    assert list(split0.tags) == sorted(split0.tags)
    assert split0.targets.shape == (54380, 50)
    assert split0.targets.sum(axis=1).min() >= 1  # every track has a tag of the subset
    assert abs(split0.durations.mean() - 244) < 0.5
    assert split0.files[0].name == split_file_name("top50tags", "train")


@needs_shared
def test_real_split0_tag_frequencies_match_published_stats(split0):
    counts = split0.tag_counts()
    for tag, (tracks, artists) in PUBLISHED_TOP50.items():
        assert counts[tag] == tracks, tag
        column = split0.tags.index(tag)
        assert len(set(split0.artist_ids[split0.targets[:, column] == 1])) == artists, tag


@needs_shared
def test_real_split0_tag_frequencies_match_pandas(split0):
    """Per-part tag counts against an independent count: pandas reading the files as ragged
    tab-separated text, tags melted out of the columns from the sixth on."""
    for part in PARTS:
        path = SHARED_JAMENDO / "splits" / "split-0" / split_file_name("top50tags", part)
        lines = path.read_text(encoding="utf-8").splitlines()[1:]
        frame = pd.Series(lines).str.split("\t", expand=True)
        tags = frame.iloc[:, 5:].melt()["value"].dropna()
        expected = tags[tags != ""].value_counts().to_dict()
        assert split0.tag_counts(part) == {t: expected.get(t, 0) for t in split0.tags}
        assert split0.tag_counts(part) != {}  # the comparison is over real counts
        ids = split0.track_ids[split0.indices(part)]
        assert list(ids) == frame[0].tolist()
        assert np.allclose(split0.durations[split0.indices(part)], frame[4].astype(float))


@needs_shared
def test_real_split0_parts_are_disjoint(split0):
    parts = [set(split0.track_ids[split0.indices(p)]) for p in PARTS]
    assert sum(map(len, parts)) == len(split0) == len(set(split0.track_ids))
    for i in range(3):
        for j in range(i + 1, 3):
            assert not parts[i] & parts[j]
    # MTG-Jamendo's splits also keep artists apart; the reader does not require it, the data has it.
    artists = [set(split0.artist_ids[split0.indices(p)]) for p in PARTS]
    assert not artists[0] & artists[2] and not artists[0] & artists[1]


@needs_shared
def test_real_split0_paths_follow_the_folder_layout(split0):
    for track_id, path in zip(split0.track_ids, split0.paths):
        number = track_number(track_id)
        folder, name = path.split("/")
        assert folder == f"{number % 100:02d}" and name == f"{number}.mp3"
    folders = {p.split("/")[0] for p in split0.paths}
    assert folders == {f"{i:02d}" for i in range(100)}
    low = split0.audio_paths("low")
    assert all(p.endswith(".low.mp3") for p in low) and low[0] == split0.paths[0][:-4] + ".low.mp3"


@needs_shared
def test_find_splits_dir_accepts_a_repository_clone_layout(tmp_path):
    assert find_splits_dir(SHARED_JAMENDO) == SHARED_JAMENDO / "splits"
    clone = tmp_path / "mtg-jamendo-dataset" / "data" / "splits" / "split-0"
    clone.mkdir(parents=True)
    assert find_splits_dir(tmp_path / "mtg-jamendo-dataset") == clone.parent


# ------------------------------------------------------------------------------------------------
# Written files: good and bad input.
# ------------------------------------------------------------------------------------------------

GOOD_ROWS = {
    "train": ["track_0000241\tartist_000005\talbum_000033\t41/241.mp3\t340.1\tgenre---rock\tinstrument---piano",
              "track_0000342\tartist_000006\talbum_000034\t42/342.mp3\t31.0\tmood/theme---happy"],
    "validation": ["track_0001200\tartist_000007\talbum_000035\t00/1200.mp3\t120.5\tgenre---rock"],
    "test": ["track_0000007\tartist_000008\talbum_000036\t07/7.mp3\t60\tinstrument---piano\tgenre---pop"],
}


def write_split(root: Path, rows=GOOD_ROWS, subset="top50tags", split=0, newline="\r\n") -> Path:
    folder = root / "splits" / f"split-{split}"
    folder.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        text = newline.join(["\t".join(HEADER)] + rows[part]) + newline
        (folder / split_file_name(subset, part)).write_bytes(text.encode("utf-8"))
    return root


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_written_split_parses(tmp_path, newline):
    data = read_split(write_split(tmp_path, newline=newline))
    assert data.tags == ("genre---pop", "genre---rock", "instrument---piano", "mood/theme---happy")
    assert data.track_ids.tolist() == ["track_0000241", "track_0000342", "track_0001200", "track_0000007"]
    assert data.part.tolist() == [0, 0, 1, 2]
    assert data.targets.tolist() == [[0, 1, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0], [1, 0, 1, 0]]
    assert data.durations.tolist() == [340.1, 31.0, 120.5, 60.0]
    assert data.audio_paths("low")[2] == "00/1200.low.mp3"
    assert track_relative_path(1200, "low") == "00/1200.low.mp3"
    assert audio_path("07/7.mp3", "full") == "07/7.mp3"


def _bad(rows_train):
    return dict(GOOD_ROWS, train=rows_train)


@pytest.mark.parametrize("row, message", [
    ("track_0000241\tartist_000005\talbum_000033\t41/241.mp3\t340.1", "at least one tag"),
    ("track_241\tartist_000005\talbum_000033\t41/241.mp3\t340.1\tgenre---rock", "TRACK_ID"),
    ("track_0000241\tartist_5\talbum_000033\t41/241.mp3\t340.1\tgenre---rock", "ARTIST_ID"),
    ("track_0000241\tartist_000005\talbum_33\t41/241.mp3\t340.1\tgenre---rock", "ALBUM_ID"),
    ("track_0000241\tartist_000005\talbum_000033\t14/241.mp3\t340.1\tgenre---rock", "does not match"),
    ("track_0000241\tartist_000005\talbum_000033\t41/241.mp3\tlong\tgenre---rock", "not a number"),
    ("track_0000241\tartist_000005\talbum_000033\t41/241.mp3\t-3\tgenre---rock", "positive"),
    ("track_0000241\tartist_000005\talbum_000033\t41/241.mp3\tnan\tgenre---rock", "positive"),
    ("track_0000241\tartist_000005\talbum_000033\t41/241.mp3\t340.1\trock", "category---name"),
    ("track_0000241\tartist_000005\talbum_000033\t41/241.mp3\t340.1\tgenre---rock\t", "category---name"),
    ("track_0000241\tartist_000005\talbum_000033\t41/241.mp3\t340.1\tgenre---rock\tgenre---rock", "twice"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    write_split(tmp_path, _bad([GOOD_ROWS["train"][1], row]))
    with pytest.raises(DataError, match=message) as info:
        read_split(tmp_path)
    assert "autotagging_top50tags-train.tsv, line 3:" in str(info.value)
    assert "\n" not in str(info.value)


def test_duplicate_track_in_one_file_and_across_parts(tmp_path):
    write_split(tmp_path, _bad(GOOD_ROWS["train"] + [GOOD_ROWS["train"][0]]))
    with pytest.raises(DataError, match=r"train.tsv, line 4: track_0000241 is listed again \(first on line 2\)"):
        read_split(tmp_path)
    write_split(tmp_path, dict(GOOD_ROWS, test=GOOD_ROWS["test"] + [GOOD_ROWS["train"][1]]))
    with pytest.raises(DataError, match=r"test.tsv, line 3: track_0000342 is also in "
                                        r"autotagging_top50tags-train.tsv \(line 3\)"):
        read_split(tmp_path)


def test_bad_header_empty_file_and_missing_file(tmp_path):
    folder = write_split(tmp_path) / "splits" / "split-0"
    (folder / split_file_name("top50tags", "validation")).write_text("TRACK_ID,ARTIST_ID\r\n")
    with pytest.raises(DataError, match=r"validation.tsv, line 1: header"):
        read_split(tmp_path)
    (folder / split_file_name("top50tags", "validation")).write_text("")
    with pytest.raises(DataError, match=r"validation.tsv: empty file"):
        read_split(tmp_path)
    (folder / split_file_name("top50tags", "validation")).write_text("\t".join(HEADER) + "\r\n")
    with pytest.raises(DataError, match=r"validation.tsv: no tracks"):
        read_split(tmp_path)
    (folder / split_file_name("top50tags", "validation")).unlink()
    with pytest.raises(DataError, match=r"validation.tsv: missing MTG-Jamendo split file"):
        read_split(tmp_path)
    (folder / split_file_name("top50tags", "validation")).write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="not UTF-8"):
        read_tsv(folder / split_file_name("top50tags", "validation"))
    with pytest.raises(DataError, match="no MTG-Jamendo split folders"):
        read_split(tmp_path / "nowhere")


def test_category_subset_rejects_other_categories(tmp_path):
    write_split(tmp_path, subset="genre")
    with pytest.raises(DataError, match=r"genre-train.tsv, line 2: tag 'instrument---piano' is not a genre tag"):
        read_split(tmp_path, subset="genre")


def test_bad_options(tmp_path):
    write_split(tmp_path)
    with pytest.raises(ConfigError, match="split must be one of 0, 1, 2, 3, 4"):
        read_split(tmp_path, split=5)
    with pytest.raises(ConfigError, match="subset must be one of"):
        read_split(tmp_path, subset="top10")
    with pytest.raises(ConfigError, match="quality"):
        audio_path("41/241.mp3", "medium")
    with pytest.raises(ConfigError, match="part must be one of"):
        read_split(tmp_path).indices("valid")
