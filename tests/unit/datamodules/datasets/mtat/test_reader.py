"""Tests of datamodules/datasets/mtat/reader.py: annotation parsing, audio layout, vocabularies and splits.

Tests marked with `real_mtat` read the real metadata from ../shared/mtat beside the repository
clone and are skipped when it is absent; the others use small generated files.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from datamodules.datasets.mtat import annotations, reader, splits, vocabulary
from infrastructure.audio import MTAT_CLIP_SAMPLES
from infrastructure.errors import ConfigError, DataError
from tests.support.paths import SHARED_DIR

SHARED_MTAT = SHARED_DIR / "mtat"
REAL_ANNOTATIONS = SHARED_MTAT / "annotations_final.csv"

real_mtat = pytest.mark.skipif(
    not REAL_ANNOTATIONS.is_file(),
    reason=f"real MTAT metadata not found at {SHARED_MTAT} (expected ../shared beside the clone)",
)


def write_annotations(path: Path, header, rows) -> Path:
    """Write an annotations file the way MTAT does: tab-separated, quoted fields, CRLF."""
    lines = ["\t".join(f'"{field}"' for field in header)]
    lines += ["\t".join(f'"{field}"' for field in row) for row in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path


@pytest.fixture(scope="module")
def real():
    if not REAL_ANNOTATIONS.is_file():
        pytest.skip(f"real MTAT metadata not found at {SHARED_MTAT}")
    return annotations.read_annotations(REAL_ANNOTATIONS)


# ----------------------------------------------------------------------------- real file


@real_mtat
def test_real_annotations_shape_and_counts(real):
    assert len(real) == 25_863
    assert len(real.tag_names) == 188
    assert real.labels.shape == (25_863, 188) and real.labels.dtype == np.uint8
    assert real.clip_ids.dtype == np.int64 and real.clip_ids.shape == (25_863,)
    assert set(np.unique(real.labels)) == {0, 1}
    assert real.tag_names[:3] == ("no voice", "singer", "duet")
    assert all(p.endswith(".mp3") and p[0] in "0123456789abcdef" and p[1] == "/" for p in real.mp3_paths)
    counts = real.labels.sum(axis=0).astype(np.int64)
    assert counts[real.tag_names.index("guitar")] == 4_852
    order = sorted(range(188), key=lambda i: (-counts[i], real.tag_names[i]))
    assert real.tag_names[order[49]] == "choral" and counts[order[49]] == 490
    assert int((real.labels.sum(axis=1) == 0).sum()) == 4_221


@real_mtat
def test_real_paper_vocabulary_135_merged_and_885_coverage(real):
    names, labels = vocabulary.merged_tag_matrix(real)
    assert len(names) == 135
    assert vocabulary.label_coverage(labels, 50) == pytest.approx(0.885, abs=5e-4)
    vocab = vocabulary.build_vocabulary(real, "paper")
    assert vocab.name == "paper" and len(vocab.tags) == 50
    assert vocab.tags == names[:50]
    assert vocab.labels.shape == (25_863, 50) and vocab.labels.dtype == np.uint8
    counts = vocab.labels.sum(axis=0).astype(np.int64)
    assert np.all(np.diff(counts) <= 0), "paper vocabulary must be most frequent first"
    # guitar + guitars merged: 4,852 raw guitar clips plus those tagged only 'guitars'.
    assert vocab.tags[0] == "guitar" and counts[0] == 4_861
    # merged tags are named after the first member of their group; members vanish
    for absorbed in ("guitars", "clasical", "classic", "strings", "weird", "choral", "vocals"):
        assert absorbed not in names
    assert "classical" in vocab.tags and "string" in vocab.tags and "strange" in vocab.tags
    # classical = classical OR clasical OR classic, computed independently here
    raw = {t: real.labels[:, i] for i, t in enumerate(real.tag_names)}
    expected = raw["classical"] | raw["clasical"] | raw["classic"]
    np.testing.assert_array_equal(vocab.labels[:, vocab.tags.index("classical")], expected)


@real_mtat
def test_real_standard_vocabulary_is_the_published_list(real):
    listed = tuple(
        line.strip() for line in (SHARED_MTAT / "standard_top50_tags.txt").read_text().splitlines() if line.strip()
    )
    assert vocabulary.STANDARD_TOP50_TAGS == listed
    vocab = vocabulary.build_vocabulary(real, "standard")
    assert vocab.tags == listed
    counts = vocab.labels.sum(axis=0).astype(np.int64)
    assert counts[0] == 4_852 and counts[-1] == 490
    assert int((vocab.labels.sum(axis=1) == 0).sum()) == 4_752


@real_mtat
def test_real_splits(real):
    folder = splits.split_rows(real, "folder")
    assert {k: len(v) for k, v in folder.items()} == {"train": 18_709, "valid": 1_825, "test": 5_329}
    default = splits.split_rows(real)
    assert splits.DEFAULT_SPLIT == "folder"
    assert all(np.array_equal(default[k], folder[k]) for k in folder)
    clean = splits.split_rows(real, "clean")
    assert {k: len(v) for k, v in clean.items()} == {"train": 15_244, "valid": 1_529, "test": 4_332}
    for split in (folder, clean):
        all_rows = np.concatenate(list(split.values()))
        assert len(np.unique(all_rows)) == len(all_rows), "a row must be in one stage only"
        for rows in split.values():
            assert rows.dtype == np.int64 and np.all(np.diff(rows) > 0)
    for stage in ("train", "valid", "test"):
        assert set(clean[stage]) <= set(folder[stage]), "clean is a subset of the folder split"
        folders = {real.mp3_paths[i][0] for i in folder[stage]}
        assert folders == set(splits.FOLDER_SPLIT[stage])
    # the three zero-byte MP3s of the official download are not in the clean split
    broken = [line.split("\t")[1] for line in (SHARED_MTAT / "broken_clips.tsv").read_text().splitlines()[1:]]
    clean_paths = {real.mp3_paths[i] for rows in clean.values() for i in rows}
    assert len(broken) == 3 and not clean_paths & set(broken)


@real_mtat
def test_shipped_clean_lists_equal_the_shared_ones():
    for stage in ("train", "valid", "test"):
        shipped = (splits.CLEAN_SPLIT_DIR / f"clean_{stage}.txt").read_bytes()
        assert shipped == (SHARED_MTAT / "splits" / f"clean_{stage}.txt").read_bytes()


# ----------------------------------------------------------------------------- small files


@pytest.fixture
def small(tmp_path):
    """Five clips, four tags including a synonym pair (guitar/guitars) and a tie."""
    header = ["clip_id", "guitar", "piano", "guitars", "zither", "mp3_path"]
    rows = [
        [2, 1, 0, 1, 0, "0/a.mp3"],  # guitar and guitars: merged counts once
        [6, 0, 1, 0, 1, "c/b.mp3"],
        [10, 0, 0, 1, 0, "d/c.mp3"],  # only guitars -> merged guitar
        [11, 0, 1, 0, 1, "f/d.mp3"],
        [15, 0, 0, 0, 0, "b/e.mp3"],
    ]
    return annotations.read_annotations(write_annotations(tmp_path / "annotations_final.csv", header, rows))


def test_small_file_parsed_generically(small, tmp_path):
    assert small.tag_names == ("guitar", "piano", "guitars", "zither")
    np.testing.assert_array_equal(small.clip_ids, [2, 6, 10, 11, 15])
    assert small.mp3_paths == ("0/a.mp3", "c/b.mp3", "d/c.mp3", "f/d.mp3", "b/e.mp3")
    np.testing.assert_array_equal(small.labels[:, 2], [1, 0, 1, 0, 0])
    assert small.source == tmp_path / "annotations_final.csv"


def test_columns_in_any_order(tmp_path):
    path = write_annotations(tmp_path / "a.csv", ["mp3_path", "x", "clip_id", "y"], [["0/a.mp3", 1, 7, 0]])
    ann = annotations.read_annotations(path)
    assert ann.tag_names == ("x", "y")
    np.testing.assert_array_equal(ann.labels, [[1, 0]])
    assert ann.clip_ids.tolist() == [7] and ann.mp3_paths == ("0/a.mp3",)


def test_unquoted_lf_file_also_reads(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("clip_id\tt1\tmp3_path\n1\t1\t0/a.mp3\n")
    assert annotations.read_annotations(path).labels.tolist() == [[1]]


def test_paper_vocabulary_merges_and_breaks_ties_by_name(small):
    vocab = vocabulary.build_vocabulary(small, "paper", n_tags=50)  # fewer tags than asked: keep all
    # merged guitar (rows 0, 2) = 2, piano = 2, zither = 2: all tied, so by name.
    assert vocab.tags == ("guitar", "piano", "zither")
    np.testing.assert_array_equal(vocab.labels[:, 0], [1, 0, 1, 0, 0])
    assert vocab.labels.dtype == np.uint8
    top2 = vocabulary.build_vocabulary(small, "paper", n_tags=2)
    assert top2.tags == ("guitar", "piano") and top2.labels.shape == (5, 2)
    names, labels = vocabulary.merged_tag_matrix(small)
    assert vocabulary.label_coverage(labels, 2) == pytest.approx(4 / 6)


def test_paper_vocabulary_orders_by_count(tmp_path):
    header = ["clip_id", "b", "a", "c", "mp3_path"]
    rows = [[1, 1, 0, 1, "0/x.mp3"], [2, 1, 0, 1, "0/y.mp3"], [3, 1, 1, 0, "0/z.mp3"]]
    ann = annotations.read_annotations(write_annotations(tmp_path / "a.csv", header, rows))
    assert vocabulary.build_vocabulary(ann, "paper").tags == ("b", "c", "a")


def test_standard_vocabulary_drops_absent_tags_keeping_order(tmp_path):
    header = ["clip_id", "piano", "weird", "guitar", "unlisted", "mp3_path"]
    ann = annotations.read_annotations(write_annotations(tmp_path / "a.csv", header, [[1, 1, 0, 1, 1, "0/a.mp3"]]))
    vocab = vocabulary.build_vocabulary(ann, "standard")
    assert vocab.tags == ("guitar", "piano", "weird")  # order of the published list
    np.testing.assert_array_equal(vocab.labels, [[1, 1, 0]])
    assert vocabulary.build_vocabulary(ann, "standard", n_tags=2).tags == ("guitar", "piano")


def test_vocabulary_errors(small, tmp_path):
    with pytest.raises(ConfigError, match="paper, standard"):
        vocabulary.build_vocabulary(small, "merged")
    with pytest.raises(ConfigError, match="n_tags"):
        vocabulary.build_vocabulary(small, "paper", n_tags=0)
    ann = annotations.read_annotations(write_annotations(tmp_path / "a.csv", ["clip_id", "foo", "mp3_path"],
                                                         [[1, 1, "0/a.mp3"]]))
    with pytest.raises(ConfigError, match="none of its tags"):
        vocabulary.build_vocabulary(ann, "standard")


def test_folder_split_on_small_dataset(small):
    split = splits.split_rows(small, "folder")
    assert {k: v.tolist() for k, v in split.items()} == {"train": [0, 4], "valid": [1], "test": [2, 3]}


def test_folder_split_rejects_paths_outside_hex_folders(tmp_path):
    ann = annotations.read_annotations(write_annotations(tmp_path / "a.csv", ["clip_id", "t", "mp3_path"],
                                                         [[1, 1, "g/a.mp3"]]))
    with pytest.raises(DataError, match="g/a.mp3"):
        splits.split_rows(ann, "folder")


def test_clean_split_rejects_non_mtat_dataset_and_unknown_split(small):
    with pytest.raises(ConfigError, match="real MagnaTagATune only"):
        splits.split_rows(small, "clean")
    with pytest.raises(ConfigError, match="folder, clean"):
        splits.split_rows(small, "random")


def test_clean_split_uses_shipped_lists(tmp_path):
    lists = splits.load_clean_lists()
    train_path = sorted(lists["train"])[0]
    test_path = sorted(lists["test"])[0]
    rows = [[1, 1, train_path], [2, 0, "0/not_in_any_list.mp3"], [3, 1, test_path]]
    ann = annotations.read_annotations(write_annotations(tmp_path / "a.csv", ["clip_id", "t", "mp3_path"], rows))
    split = splits.split_rows(ann, "clean")
    assert {k: v.tolist() for k, v in split.items()} == {"train": [0], "valid": [], "test": [2]}


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ('"clip_id"\t"t"\t"mp3_path"\r\n', "no data rows"),
        ('"id"\t"t"\t"mp3_path"\r\n"1"\t"0"\t"0/a.mp3"\r\n', "no 'clip_id' column"),
        ('"clip_id"\t"t"\t"path"\r\n"1"\t"0"\t"0/a.mp3"\r\n', "no 'mp3_path' column"),
        ('"clip_id"\t"t"\t"mp3_path"\r\n"1"\t"0"\t"0/a.mp3"\r\n"2"\t"0"\r\n', "line 3 has 2 fields, header has 3"),
        ('"clip_id"\t"t"\t"u"\t"mp3_path"\r\n"1"\t"0"\t"2"\t"0/a.mp3"\r\n', r"line 2, column 3 \('u'\): label '2'"),
        ('"clip_id"\t"t"\t"mp3_path"\r\n"1"\t""\t"0/a.mp3"\r\n', r"line 2, column 2 \('t'\): label ''"),
        ('"clip_id"\t"t"\t"mp3_path"\r\n"1"\t"10"\t"0/a.mp3"\r\n', "label '10'"),
        ('"clip_id"\t"t"\t"mp3_path"\r\n"1"\t"0"\t"0/a.mp3"\r\n"1"\t"1"\t"0/b.mp3"\r\n',
         "line 3: duplicate clip_id 1 .first on line 2"),
        ('"clip_id"\t"t"\t"mp3_path"\r\n"x"\t"0"\t"0/a.mp3"\r\n', "line 2: clip_id 'x' is not an integer"),
        ('"clip_id"\t"t"\t"mp3_path"\r\n"1"\t"0"\t""\r\n', "line 2: empty mp3_path"),
    ],
)
def test_malformed_annotations_raise_data_error_naming_file(tmp_path, content, message):
    path = tmp_path / "annotations_final.csv"
    path.write_text(content, newline="")
    with pytest.raises(DataError, match=message) as info:
        annotations.read_annotations(path)
    assert str(path) in str(info.value)


def test_missing_annotations_file(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        annotations.read_annotations(tmp_path / "nope.csv")
    assert str(tmp_path / "nope.csv") in str(info.value)


def test_binary_annotations_file(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="UTF-8"):
        annotations.read_annotations(path)


# ----------------------------------------------------------------------------- layout


def test_find_audio_root_both_layouts(tmp_path):
    with pytest.raises(DataError, match="no MP3 folders"):
        reader.find_audio_root(tmp_path)
    (tmp_path / "c").mkdir()
    assert reader.find_audio_root(tmp_path) == tmp_path  # zip unpacked in place
    (tmp_path / "mp3" / "0").mkdir(parents=True)
    assert reader.find_audio_root(tmp_path) == tmp_path / "mp3"  # --download layout wins
    other = tmp_path / "other"
    (other / "mp3").mkdir(parents=True)  # an mp3 folder without hex sub-folders does not count
    with pytest.raises(DataError, match=str(other)):
        reader.find_audio_root(other)


def test_dataset_clip_samples(tmp_path):
    assert reader.dataset_clip_samples(tmp_path) == MTAT_CLIP_SAMPLES
    (tmp_path / "synthetic.json").write_text(json.dumps({"clip_samples": 16000, "n_clips": 20}))
    assert reader.dataset_clip_samples(tmp_path) == 16000
    for bad in ('{"clip_samples": -5}', '{"clip_samples": "16000"}', "{}", "not json"):
        (tmp_path / "synthetic.json").write_text(bad)
        with pytest.raises(DataError, match="synthetic.json"):
            reader.dataset_clip_samples(tmp_path)
