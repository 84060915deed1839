"""``python run.py --download DIR``: fetch MagnaTagATune, verify it, and unpack it.

`download_mtat` fetches, from the dataset's home at City, University of London
(`MTAT_BASE_URL`), the three parts of the MP3 zip and the two metadata files, checks each
against the published SHA-256 (`MTAT_SHA256`, the values of the dataset's SHA256SUMS), joins
the parts into ``mp3.zip`` and unpacks it into ``DIR/mp3/`` (the layout
`datamodules.datasets.mtat.reader.find_audio_root` looks for first). Result::

    DIR/annotations_final.csv   DIR/clip_info_final.csv
    DIR/mp3.zip.001 .002 .003   (verified parts; safe to delete once DIR/mp3/ exists)
    DIR/mp3/0/... DIR/mp3/f/... (the MP3s)

Resumption (`datamodules.datasets.fetch`): an unfinished file is kept as ``NAME.part`` and continued
with an HTTP Range request (a server that ignores Range sends the whole file again, which is then
restarted). Verified files are not fetched again; once ``DIR/mp3/`` exists (it appears by an atomic
rename after a complete extraction) the parts are no longer needed and not checked. The joined
``mp3.zip`` is deleted after extraction (it is a byte copy of the three parts).

Integrity: a file whose SHA-256 differs from the published value is renamed ``NAME.corrupt``
(kept for inspection, never resumed from or re-used) and a `DataError` names it; rerunning
downloads it afresh. Zip members whose path would land outside ``DIR/mp3/`` are refused before
anything is extracted.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from datamodules.datasets.fetch import byte_progress, download_folder, ensure_file, load_stamp
from datamodules.datasets.mtat.checks import MTAT_SHA256, ZIP_PART_PATTERN
from infrastructure.errors import DataError

MTAT_BASE_URL = "https://mirg.city.ac.uk/datasets/magnatagatune/"
"""Where MagnaTagATune is published (City, University of London)."""

JOINED_ZIP = "mp3.zip"
AUDIO_DIR = "mp3"
_BLOCK = 1 << 20


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
            bar = byte_progress("unpacking", sum(m.file_size for m in members), 0, progress)
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
    dest = download_folder(dest_dir)
    checksums = dict(MTAT_SHA256 if checksums is None else checksums)
    parts = sorted(name for name in checksums if ZIP_PART_PATTERN.match(name))
    audio_done = (dest / AUDIO_DIR).is_dir()
    stamp = load_stamp(dest)
    try:
        for name, expected in checksums.items():
            if name in parts and audio_done:
                continue
            ensure_file(dest, name, expected.lower(), base_url, stamp, progress, timeout)
        if parts and not audio_done:
            joined = _join_parts(dest, parts)
            _extract(dest, joined, progress)
            joined.unlink()
    except OSError as exc:
        raise DataError(f"download folder {dest}: {exc}") from exc
    return dest
