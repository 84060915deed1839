"""Tests of datamodules/datasets/mtat/download.py against generated files served over file:// and a local
HTTP server (with Range support, request log and fault injection); no network is used."""

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from datamodules.datasets import fetch
from datamodules.datasets.mtat import download
from datamodules.datasets.mtat.checks import MTAT_SHA256
from datamodules.datasets.mtat.download import download_mtat
from infrastructure.errors import DataError
from tests.support.paths import SHARED_DIR

SHARED_MTAT = SHARED_DIR / "mtat"

MEMBERS = {
    "0/first_clip-0-29.mp3": bytes(range(256)) * 40,
    "0/second_clip-30-59.mp3": b"\x01\x02" * 3000,
    "c/valid_clip-0-29.mp3": b"valid" * 900,
    "f/test_clip-0-29.mp3": b"\xff" * 7000,
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def make_source(folder: Path, members=MEMBERS) -> dict[str, str]:
    """Write a small MTAT-like distribution into folder; return its checksum table."""
    folder.mkdir(parents=True, exist_ok=True)
    data = make_zip(members)
    third = len(data) // 3
    files = {
        "mp3.zip.001": data[:third],
        "mp3.zip.002": data[third:2 * third],
        "mp3.zip.003": data[2 * third:],
        "annotations_final.csv": b'"clip_id"\t"guitar"\t"mp3_path"\r\n"2"\t"1"\t"0/first_clip-0-29.mp3"\r\n',
        "clip_info_final.csv": b'"clip_id"\t"title"\t"mp3_path"\r\n"2"\t"first"\t"0/first_clip-0-29.mp3"\r\n',
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return {name: sha(content) for name, content in files.items()}


class Server:
    """A threaded HTTP server for one folder that honours Range and logs requests.

    Attributes:
        log: (path, Range header or None) of every request.
        ignore_range: send 200 with the whole file even when a Range is asked.
        cut_after: {file name: bytes}: announce the full length but close after that many bytes.
    """

    def __init__(self, folder: Path):
        self.folder, self.log, self.ignore_range, self.cut_after = folder, [], False, {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.log.append((name, self.headers.get("Range")))
                path = server.folder / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                asked = self.headers.get("Range")
                if asked and not server.ignore_range:
                    start = int(asked.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if name in server.cut_after:
                    body = body[: server.cut_after.pop(name)]
                self.wfile.write(body)
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mtat/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "source"
    return folder, make_source(folder)


@pytest.fixture
def server(source):
    srv = Server(source[0])
    yield srv
    srv.close()


def assert_complete(dest: Path, source_folder: Path):
    for name, data in MEMBERS.items():
        assert (dest / "mp3" / name).read_bytes() == data
    for name in ("annotations_final.csv", "clip_info_final.csv", "mp3.zip.001", "mp3.zip.002", "mp3.zip.003"):
        assert (dest / name).read_bytes() == (source_folder / name).read_bytes()
    leftovers = [p.name for p in dest.iterdir() if p.name.endswith((".part", ".corrupt", ".partial", ".joining"))]
    assert leftovers == []
    assert not (dest / "mp3.zip").exists(), "the joined zip is removed after unpacking"


def test_embedded_checksums_equal_the_published_table():
    sums_file = SHARED_MTAT / "SHA256SUMS"
    if not sums_file.is_file():
        pytest.skip(f"{sums_file} not found (expected ../shared beside the clone)")
    published = dict(reversed(line.split()) for line in sums_file.read_text().splitlines() if line.strip())
    assert dict(MTAT_SHA256) == published
    assert download.MTAT_BASE_URL == "https://mirg.city.ac.uk/datasets/magnatagatune/"


def test_file_url_download_joins_and_unpacks(source, tmp_path):
    folder, sums = source
    dest = tmp_path / "data"
    assert download_mtat(dest, base_url=folder.as_uri(), progress=False, checksums=sums) == dest
    assert_complete(dest, folder)
    # the layout is the one the rest of the suite reads
    from datamodules.datasets.mtat.annotations import read_annotations
    from datamodules.datasets.mtat.reader import find_audio_root

    assert find_audio_root(dest) == dest / "mp3"
    assert read_annotations(dest / "annotations_final.csv").mp3_paths == ("0/first_clip-0-29.mp3",)


def test_http_download_with_progress_bars(source, server, tmp_path, capsys):
    dest = tmp_path / "data"
    download_mtat(dest, base_url=server.url, progress=True, checksums=source[1])
    assert_complete(dest, source[0])
    assert [name for name, _ in server.log] == list(source[1])
    assert all(rng is None for _, rng in server.log)
    assert "mp3.zip.002" in capsys.readouterr().err


def test_partial_file_is_resumed_with_a_range_request(source, server, tmp_path):
    folder, sums = source
    dest = tmp_path / "data"
    dest.mkdir()
    half = (folder / "mp3.zip.002").read_bytes()
    (dest / "mp3.zip.002.part").write_bytes(half[: len(half) // 2])
    download_mtat(dest, base_url=server.url, progress=False, checksums=sums)
    assert ("mp3.zip.002", f"bytes={len(half) // 2}-") in server.log
    assert_complete(dest, folder)


def test_server_ignoring_range_restarts_the_file(source, server, tmp_path):
    folder, sums = source
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "mp3.zip.001.part").write_bytes(b"stale bytes")  # would corrupt the file if appended to
    server.ignore_range = True
    download_mtat(dest, base_url=server.url, progress=False, checksums=sums)
    assert_complete(dest, folder)


def test_interrupted_transfer_is_resumed_by_a_rerun(source, server, tmp_path):
    folder, sums = source
    dest = tmp_path / "data"
    server.cut_after["mp3.zip.003"] = 1000
    with pytest.raises(DataError, match="interrupted after 1000 bytes.*rerun resumes"):
        download_mtat(dest, base_url=server.url, progress=False, checksums=sums)
    assert (dest / "mp3.zip.003.part").stat().st_size == 1000
    assert (dest / "mp3.zip.001").exists() and not (dest / "mp3").exists()
    server.log.clear()
    download_mtat(dest, base_url=server.url, progress=False, checksums=sums)
    assert server.log[0] == ("mp3.zip.003", "bytes=1000-"), "verified files are not fetched again"
    assert_complete(dest, folder)


def test_checksum_mismatch_keeps_corrupt_file_and_redownloads_afresh(source, server, tmp_path):
    folder, sums = source
    dest = tmp_path / "data"
    good = (folder / "mp3.zip.002").read_bytes()
    bad = bytes([good[0] ^ 0xFF]) + good[1:]
    (folder / "mp3.zip.002").write_bytes(bad)
    with pytest.raises(DataError, match="mp3.zip.002: SHA-256 mismatch") as info:
        download_mtat(dest, base_url=server.url, progress=False, checksums=sums)
    assert str(dest / "mp3.zip.002.corrupt") in str(info.value)
    assert (dest / "mp3.zip.002.corrupt").read_bytes() == bad
    assert not (dest / "mp3.zip.002").exists() and not (dest / "mp3.zip.002.part").exists()
    (folder / "mp3.zip.002").write_bytes(good)  # the server is fixed
    server.log.clear()
    download_mtat(dest, base_url=server.url, progress=False, checksums=sums)
    assert ("mp3.zip.002", None) in server.log, "the corrupt file is not resumed from"
    assert (dest / "mp3.zip.002").read_bytes() == good
    (dest / "mp3.zip.002.corrupt").unlink()
    assert_complete(dest, folder)


def test_existing_file_with_wrong_checksum_is_not_reused(source, tmp_path):
    folder, sums = source
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "annotations_final.csv").write_text("edited by hand")
    with pytest.raises(DataError, match="annotations_final.csv: SHA-256 mismatch"):
        download_mtat(dest, base_url=folder.as_uri(), progress=False, checksums=sums)
    assert (dest / "annotations_final.csv.corrupt").read_text() == "edited by hand"


def test_finished_download_makes_no_requests(source, server, tmp_path, monkeypatch):
    folder, sums = source
    dest = tmp_path / "data"
    download_mtat(dest, base_url=server.url, progress=False, checksums=sums)
    server.log.clear()

    def no_hashing(path):
        raise AssertionError(f"{path} was verified already and must not be hashed again")

    monkeypatch.setattr(fetch, "sha256_of", no_hashing)
    download_mtat(dest, base_url=server.url, progress=False, checksums=sums)
    assert server.log == []
    # the parts may be deleted once mp3/ exists
    for part in ("mp3.zip.001", "mp3.zip.002", "mp3.zip.003"):
        (dest / part).unlink()
    download_mtat(dest, base_url=server.url, progress=False, checksums=sums)
    assert server.log == []


def test_interrupted_unpacking_is_redone(source, tmp_path):
    folder, sums = source
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "mp3.partial" / "0").mkdir(parents=True)
    (dest / "mp3.partial" / "0" / "half_written.mp3").write_bytes(b"x")
    download_mtat(dest, base_url=folder.as_uri(), progress=False, checksums=sums)
    assert_complete(dest, folder)
    assert not (dest / "mp3" / "0" / "half_written.mp3").exists()


@pytest.mark.parametrize("evil", ["../escaped.mp3", "/abs/escaped.mp3", "0/../../escaped.mp3"])
def test_unsafe_zip_member_is_refused(tmp_path, evil):
    folder = tmp_path / "source"
    sums = make_source(folder, {"0/fine.mp3": b"ok", evil: b"evil"})
    dest = tmp_path / "deep" / "data"
    with pytest.raises(DataError, match="refusing to unpack member"):
        download_mtat(dest, base_url=folder.as_uri(), progress=False, checksums=sums)
    assert not (dest / "mp3").exists() and not (dest / "mp3.partial").exists()
    assert not list(tmp_path.rglob("escaped.mp3"))


def test_unreachable_server_and_missing_file(source, server, tmp_path):
    folder, sums = source
    with pytest.raises(DataError, match=r"http://127\.0\.0\.1:9/x/mp3\.zip\.001: cannot download"):
        download_mtat(tmp_path / "a", base_url="http://127.0.0.1:9/x", progress=False, checksums=sums)
    with pytest.raises(DataError, match="HTTP 404"):
        download_mtat(tmp_path / "b", base_url=server.url, progress=False, checksums={"absent.bin": "0" * 64})


def test_unwritable_destination(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match=f"download folder {blocker / 'data'}"):
        download_mtat(blocker / "data", base_url=tmp_path.as_uri(), progress=False, checksums={})
