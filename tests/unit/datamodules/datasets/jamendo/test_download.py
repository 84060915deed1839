"""Tests of datamodules/datasets/jamendo/download.py (and checks.py) on small TAR archives built here, with a checksum
list in the published format, served over file:// (no network)."""

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from datamodules.datasets.jamendo import download as jamendo_download
from datamodules.datasets.jamendo.checks import CHECKSUM_DIR, CHECKSUM_FILES, read_checksum_list
from datamodules.datasets.jamendo.download import UNPACKED_STAMP, download_jamendo
from infrastructure.errors import ConfigError, DataError
from tests.support.paths import SHARED_DIR

SHARED_JAMENDO = SHARED_DIR / "mtg-jamendo"


def make_tar(members: dict[str, bytes], folder: str | None = None, extra=None) -> bytes:
    """A TAR like the published ones: the folder first, then its files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        if folder is not None:
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            archive.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra or []:
            archive.addfile(info)
    return buffer.getvalue()


ARCHIVES = {
    "raw_30s_audio-low-00.tar": {"00/100.low.mp3": b"a" * 5000, "00/1200.low.mp3": bytes(range(256)) * 9,
                                 "00/300.low.mp3": b"c" * 123},
    "raw_30s_audio-low-01.tar": {"01/1.low.mp3": b"\x01\x02" * 4000, "01/201.low.mp3": b"z" * 17},
    "raw_30s_audio-low-02.tar": {"02/2.low.mp3": b"two" * 999},
}


def make_source(folder: Path, archives=ARCHIVES) -> Path:
    """Write the archives and their checksum list ('<sha256> <name>' per line); return the list."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, members in archives.items():
        data = make_tar(members, folder=name[-6:-4])
        (folder / name).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()} {name}")
    checksums = folder.parent / f"{folder.name}-sha256_tars.txt"
    checksums.write_text("\n".join(lines) + "\n")
    return checksums


def get(dest, source, checksums, **kw):
    return download_jamendo(dest, base_url=source.as_uri() + "/", checksum_file=checksums, progress=False, **kw)


def all_members(archives=ARCHIVES):
    return {name: data for members in archives.values() for name, data in members.items()}


def test_downloads_verifies_and_unpacks(tmp_path):
    source, dest = tmp_path / "server", tmp_path / "data"
    checksums = make_source(source)
    assert get(dest, source, checksums) == dest
    for name, data in all_members().items():
        assert (dest / name).read_bytes() == data
    assert not list(dest.glob("*.tar")) and not list(dest.rglob(".*.part"))  # archives deleted
    assert set(__import__("json").loads((dest / UNPACKED_STAMP).read_text())) == set(ARCHIVES)
    # A rerun neither fetches nor checks anything: it works with the server gone.
    for path in source.iterdir():
        path.unlink()
    get(dest, source, checksums)


def test_keep_archives_and_subset(tmp_path):
    source, dest = tmp_path / "server", tmp_path / "data"
    checksums = make_source(source)
    get(dest, source, checksums, keep_archives=True, archives=["raw_30s_audio-low-01.tar"])
    assert [p.name for p in dest.glob("*.tar")] == ["raw_30s_audio-low-01.tar"]
    assert (dest / "01" / "1.low.mp3").is_file() and not (dest / "00").exists()
    with pytest.raises(ConfigError, match="not in the checksum list: raw_30s_audio-low-77.tar"):
        get(dest, source, checksums, archives=["raw_30s_audio-low-77.tar"])
    with pytest.raises(ConfigError, match="quality"):
        download_jamendo(dest, quality="medium")


def test_corrupt_archive_is_named_kept_and_refetched_while_others_finish(tmp_path):
    source, dest = tmp_path / "server", tmp_path / "data"
    checksums = make_source(source)
    good = (source / "raw_30s_audio-low-01.tar").read_bytes()
    (source / "raw_30s_audio-low-01.tar").write_bytes(good[:-10] + b"X" * 10)
    with pytest.raises(DataError, match=r"1 of 3 archives failed.*raw_30s_audio-low-01.tar: .*SHA-256 mismatch") as info:
        get(dest, source, checksums)
    assert "\n" not in str(info.value)
    assert (dest / "raw_30s_audio-low-01.tar.corrupt").is_file()
    assert (dest / "00" / "100.low.mp3").is_file() and (dest / "02" / "2.low.mp3").is_file()
    assert not (dest / "01").exists()
    (source / "raw_30s_audio-low-01.tar").write_bytes(good)
    get(dest, source, checksums)
    assert (dest / "01" / "201.low.mp3").read_bytes() == b"z" * 17


def test_interrupted_download_resumes_from_part(tmp_path):
    source, dest = tmp_path / "server", tmp_path / "data"
    checksums = make_source(source)
    dest.mkdir()
    data = (source / "raw_30s_audio-low-00.tar").read_bytes()
    (dest / "raw_30s_audio-low-00.tar.part").write_bytes(data[: len(data) // 2])
    get(dest, source, checksums)
    assert (dest / "00" / "1200.low.mp3").read_bytes() == ARCHIVES["raw_30s_audio-low-00.tar"]["00/1200.low.mp3"]
    assert not (dest / "raw_30s_audio-low-00.tar.part").exists()


def test_interrupted_unpack_resumes_without_rewriting_done_members(tmp_path, monkeypatch):
    source, dest = tmp_path / "server", tmp_path / "data"
    checksums = make_source(source)
    real = jamendo_download._extract_member
    calls = {"n": 0}

    def dying(archive, member, target):
        calls["n"] += 1
        if calls["n"] == 3:  # the last member of the first archive: written halfway, then killed
            target.with_name(f".{target.name}.part").write_bytes(b"half")
            raise KeyboardInterrupt
        real(archive, member, target)

    monkeypatch.setattr(jamendo_download, "_extract_member", dying)
    with pytest.raises(KeyboardInterrupt):
        get(dest, source, checksums)
    done = {name: (dest / name).stat() for name in ("00/100.low.mp3", "00/1200.low.mp3")}
    assert not (dest / "00" / "300.low.mp3").exists() and (dest / "00" / ".300.low.mp3.part").exists()
    assert not (dest / UNPACKED_STAMP).exists()
    monkeypatch.setattr(jamendo_download, "_extract_member", real)
    written = jamendo_download.unpack_archive(dest, dest / "raw_30s_audio-low-00.tar")
    assert written == 1  # only the missing member
    for name, before in done.items():
        after = (dest / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    get(dest, source, checksums)
    for name, data in all_members().items():
        assert (dest / name).read_bytes() == data
    assert not list(dest.rglob(".*.part"))


@pytest.mark.parametrize("bad, message", [
    ("../evil.mp3", "outside the target folder"),
    ("/abs/evil.mp3", "outside the target folder"),
    ("link", "not a regular file or folder"),
])
def test_unsafe_members_are_refused_before_writing(tmp_path, bad, message):
    source, dest = tmp_path / "server", tmp_path / "data"
    extra = []
    members = {"03/3.low.mp3": b"fine"}
    if bad == "link":
        info = tarfile.TarInfo("03/link.low.mp3")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        extra.append(info)
    else:
        members[bad] = b"evil"
    source.mkdir()
    data = make_tar(members, folder="03", extra=extra)
    (source / "raw_30s_audio-low-03.tar").write_bytes(data)
    checksums = tmp_path / "sums.txt"
    checksums.write_text(f"{hashlib.sha256(data).hexdigest()} raw_30s_audio-low-03.tar\n")
    with pytest.raises(DataError, match=message):
        get(dest, source, checksums)
    assert not (dest / "03").exists() and not (tmp_path / "evil.mp3").exists()


def test_checksum_list_errors(tmp_path):
    bad = tmp_path / "sums.txt"
    bad.write_text("0" * 64 + " raw_30s_audio-low-00.tar\n\nnot a checksum line\n")
    with pytest.raises(DataError, match=r"sums.txt, line 3: expected '<64 hex digits> <name>.tar'"):
        read_checksum_list(bad)
    bad.write_text("0" * 64 + " a.tar\n" + "1" * 64 + " a.tar\n")
    with pytest.raises(DataError, match="line 2: archive name 'a.tar' .* listed twice"):
        read_checksum_list(bad)
    bad.write_text("\n")
    with pytest.raises(DataError, match="no archives listed"):
        read_checksum_list(bad)


@pytest.mark.parametrize("quality", ["low", "full"])
def test_shipped_checksum_lists(quality):
    table = read_checksum_list(CHECKSUM_DIR / CHECKSUM_FILES[quality])
    prefix = "raw_30s_audio-low-" if quality == "low" else "raw_30s_audio-"
    assert list(table) == [f"{prefix}{i:02d}.tar" for i in range(100)]
    shared = SHARED_JAMENDO / CHECKSUM_FILES[quality]
    if not shared.is_file():
        pytest.skip(f"shared MTG-Jamendo checksum list not found at {shared}")
    assert (CHECKSUM_DIR / CHECKSUM_FILES[quality]).read_bytes() == shared.read_bytes()
