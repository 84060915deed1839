"""``python run.py --download DIR``: fetch MagnaTagATune, verify it, and unpack it.

`download_mtat` fetches, from the dataset's home at City, University of London
(`MTAT_BASE_URL`), the three parts of the MP3 zip and the two metadata files, checks each
against the published SHA-256 (`MTAT_SHA256`, the values of the dataset's SHA256SUMS), joins
the parts into ``mp3.zip`` and unpacks it into ``DIR/mp3/`` (the layout
`datamodules.datasets.mtat.reader.find_audio_root` looks for first). Result::

    DIR/annotations_final.csv   DIR/clip_info_final.csv
    DIR/mp3.zip.001 .002 .003   (verified parts; safe to delete once DIR/mp3/ exists)
    DIR/mp3/0/... DIR/mp3/f/... (the MP3s)

Resumption: an unfinished file is kept as ``NAME.part`` and continued with an HTTP Range
request (a server that ignores Range sends the whole file again, which is then restarted).
Verified files are not fetched again; once ``DIR/mp3/`` exists (it appears by an atomic
rename after a complete extraction) the parts are no longer needed and not checked. The joined
``mp3.zip`` is deleted after extraction (it is a byte copy of the three parts).

Integrity: a file whose SHA-256 differs from the published value is renamed ``NAME.corrupt``
(kept for inspection, never resumed from or re-used) and a `DataError` names it; rerunning
downloads it afresh. Zip members whose path would land outside ``DIR/mp3/`` are refused before
anything is extracted.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from infrastructure.errors import DataError
from infrastructure.io import write_text_atomic

MTAT_BASE_URL = "https://mirg.city.ac.uk/datasets/magnatagatune/"
"""Where MagnaTagATune is published (City, University of London)."""

MTAT_SHA256: Mapping[str, str] = {
    "mp3.zip.001": "f857fe185968773058cc71662c2ef5d8f2d4b7338e3c122cfd52f82dcb9760b9",
    "mp3.zip.002": "fc2e1ec441755556ed1398b1808f1b08b6034372f8bc27394510c0c58cdb52ce",
    "mp3.zip.003": "83a689824c17e82f6eb81cdbc4e4ca239a4cfc1fb41f1a5c80b861caec90450f",
    "annotations_final.csv": "99b94e95825d4fa576386a5367b9c96e0ec636e9f9c240aceb492f4728f68c3c",
    "clip_info_final.csv": "cb6108a10d3a91f0bfd7d2fbec2382559d15f20c8d28093f14e12162a47a3e78",
}
"""Published SHA-256 of every file fetched, by file name (download order)."""

ZIP_PART_PATTERN = re.compile(r"^mp3\.zip\.\d{3}$")
"""Names of the zip parts among the files of a checksum table (joined in name order)."""

JOINED_ZIP = "mp3.zip"
AUDIO_DIR = "mp3"
VERIFIED_STAMP = ".verified.json"
"""Records (size, mtime, sha256) of files already verified, so reruns need not re-hash 3 GB."""

_BLOCK = 1 << 20


def _byte_progress(label: str, total: int | None, initial: int, enabled: bool) -> tqdm:
    """A byte progress bar on stderr (none when not ``enabled``)."""
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                file=sys.stderr, disable=not enabled)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_url(base_url: str, name: str) -> str:
    return urllib.parse.urljoin(base_url if base_url.endswith("/") else base_url + "/", name)


def _load_stamp(dest: Path) -> dict:
    try:
        stamp = json.loads((dest / VERIFIED_STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _save_stamp(dest: Path, stamp: dict) -> None:
    write_text_atomic(dest / VERIFIED_STAMP, json.dumps(stamp, indent=2, sort_keys=True))


def _stat_key(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Download ``url`` into ``part``, continuing an existing ``part`` with a Range request."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is complete (or too long)
            return
        raise DataError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{url}: cannot download ({reason}); check the address or your connection") from exc
    with response:
        status = getattr(response, "status", None)
        content_range = response.headers.get("Content-Range", "")
        if have and status == 206 and content_range.startswith(f"bytes {have}-"):
            mode = "ab"
        else:  # server ignored the Range header (or a fresh start): take the whole file
            mode, have = "wb", 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        bar = _byte_progress(part.name.removesuffix(".part"), total, have, progress)
        try:
            with open(part, mode) as handle:
                for block in iter(lambda: response.read(_BLOCK), b""):
                    handle.write(block)
                    bar.update(len(block))
            # http.client returns b"" (no error) when the connection closes early: count bytes.
            if total is not None and part.stat().st_size < total:
                raise ConnectionError(f"connection closed, {total} bytes announced")
        except (OSError, http.client.HTTPException) as exc:
            raise DataError(
                f"{url}: download interrupted after {part.stat().st_size} bytes ({exc}); "
                f"{part} is kept and a rerun resumes it"
            ) from exc
        finally:
            bar.close()


def _reject_corrupt(path: Path, expected: str, actual: str) -> DataError:
    """Move a file with the wrong checksum to ``NAME.corrupt`` and build the error to raise."""
    name = path.name.removesuffix(".part")
    corrupt = path.with_name(f"{name}.corrupt")
    os.replace(path, corrupt)
    return DataError(
        f"{path.parent / name}: SHA-256 mismatch (expected {expected}, got {actual}); the file is "
        f"kept as {corrupt} for inspection and will be downloaded afresh on the next run"
    )


def _ensure_file(dest: Path, name: str, expected: str, base_url: str, stamp: dict, progress: bool, timeout: float) -> None:
    """Make ``dest/name`` a verified copy of ``base_url/name``."""
    final = dest / name
    if final.exists():
        if stamp.get(name) == [*_stat_key(final), expected]:
            return
        actual = sha256_of(final)
        if actual != expected:
            raise _reject_corrupt(final, expected, actual)
    else:
        part = dest / f"{name}.part"
        _fetch(_file_url(base_url, name), part, progress, timeout)
        actual = sha256_of(part)
        if actual != expected:
            raise _reject_corrupt(part, expected, actual)
        os.replace(part, final)
    stamp[name] = [*_stat_key(final), expected]
    _save_stamp(dest, stamp)


def _join_parts(dest: Path, parts: list[str]) -> Path:
    """Concatenate the parts into ``dest/mp3.zip`` (written under a temporary name, then renamed)."""
    joined = dest / JOINED_ZIP
    expected_size = sum((dest / p).stat().st_size for p in parts)
    if joined.is_file() and joined.stat().st_size == expected_size:
        return joined
    tmp = dest / f"{JOINED_ZIP}.joining"
    with open(tmp, "wb") as out:
        for name in parts:
            with open(dest / name, "rb") as handle:
                shutil.copyfileobj(handle, out, _BLOCK)
    os.replace(tmp, joined)
    return joined


def _safe_members(archive: zipfile.ZipFile, zip_path: Path) -> list[zipfile.ZipInfo]:
    """The archive's members, after checking none would be written outside the target folder."""
    members = archive.infolist()
    for info in members:
        name = info.filename.replace("\\", "/")
        pure = PurePosixPath(name)
        mode = info.external_attr >> 16
        if (
            not name
            or pure.is_absolute()
            or re.match(r"^[A-Za-z]:", name)
            or ".." in pure.parts
            or stat.S_ISLNK(mode)
        ):
            raise DataError(
                f"{zip_path}: refusing to unpack member {info.filename!r}: it would land outside the "
                "target folder (absolute path, '..' or a symbolic link)"
            )
    return members


def _extract(dest: Path, joined: Path, progress: bool) -> None:
    """Unpack ``joined`` into ``dest/mp3.partial`` then rename it to ``dest/mp3``."""
    staging = dest / f"{AUDIO_DIR}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        with zipfile.ZipFile(joined) as archive:
            members = _safe_members(archive, joined)
            staging.mkdir()
            root = staging.resolve()
            bar = _byte_progress("unpacking", sum(m.file_size for m in members), 0, progress)
            try:
                for info in members:
                    target = (staging / info.filename).resolve()
                    if root not in target.parents and target != root:
                        raise DataError(f"{joined}: refusing to unpack member {info.filename!r} outside {staging}")
                    archive.extract(info, staging)
                    bar.update(info.file_size)
            finally:
                bar.close()
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise DataError(f"{joined}: not a valid zip archive ({exc}); delete it and rerun") from exc
    os.replace(staging, dest / AUDIO_DIR)


def download_mtat(
    dest_dir: str | Path,
    base_url: str = MTAT_BASE_URL,
    progress: bool = True,
    checksums: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download, verify, join and unpack MagnaTagATune into ``dest_dir``; return ``dest_dir``.

    Args:
        dest_dir: target folder (created if needed); becomes the dataset's DATA_DIR.
        base_url: folder URL holding the files (``https://``, ``http://`` or ``file://``).
        progress: show progress bars on stderr.
        checksums: file name -> SHA-256 of every file to fetch (default `MTAT_SHA256`); names
            matching `ZIP_PART_PATTERN` are joined, in name order, and unpacked.
        timeout: seconds to wait on a silent connection.

    Raises:
        DataError: unreachable server, interrupted transfer (rerun resumes), checksum mismatch
            (file kept as ``.corrupt``), unsafe or invalid zip, unwritable ``dest_dir``.
    """
    dest = Path(dest_dir)
    checksums = dict(MTAT_SHA256 if checksums is None else checksums)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"download folder {dest}: cannot create it: {exc.strerror or exc}") from exc
    if not os.access(dest, os.W_OK):
        raise DataError(f"download folder {dest} is not writable")
    parts = sorted(name for name in checksums if ZIP_PART_PATTERN.match(name))
    audio_done = (dest / AUDIO_DIR).is_dir()
    stamp = _load_stamp(dest)
    try:
        for name, expected in checksums.items():
            if name in parts and audio_done:
                continue
            _ensure_file(dest, name, expected.lower(), base_url, stamp, progress, timeout)
        if parts and not audio_done:
            joined = _join_parts(dest, parts)
            _extract(dest, joined, progress)
            joined.unlink()
    except OSError as exc:
        raise DataError(f"download folder {dest}: {exc}") from exc
    return dest
