"""``--download DIR --dataset mtg-jamendo``: fetch MTG-Jamendo's audio TARs, verify, unpack.

MTG-Jamendo's audio is published as 100 TAR archives per quality, one per audio folder:
``raw_30s_audio-low-00.tar`` .. ``-99.tar`` (low quality, mono VBR MP3, 156 GB) or
``raw_30s_audio-00.tar`` .. (full quality, 320 kbit/s stereo, 508 GB). Each holds the folder
``NN/`` and its tracks (``NN/<number>.low.mp3`` or ``NN/<number>.mp3``), so unpacking them all
into DIR gives the layout the split TSVs' PATH column refers to (`datamodules.datasets.jamendo.splits`).
The metadata repository lists the SHA-256 of every archive (``<sha256> <name>`` per line); those
two lists ship in ``datamodules/datasets/jamendo/checksums/`` (copied unchanged from
``MTG/mtg-jamendo-dataset`` ``data/download/``; `datamodules.datasets.jamendo.checks` reads them).

`download_jamendo` fetches each archive from ``base_url`` (default `JAMENDO_BASE_URL` + the
quality's folder; ``file://`` works, for mirrors and tests), with `datamodules.datasets.fetch`'s
machinery: resumable ``NAME.part`` with HTTP Range, SHA-256 check, a mismatching file renamed
``NAME.corrupt`` (kept for inspection, never reused) and fetched afresh on the next run,
verified files remembered in ``DIR/.verified.json``. A verified archive is unpacked member by
member: each file is written as ``.NAME.part`` and renamed, so a file present under its own
name is complete; a run interrupted mid-archive skips, on the next run, the members already
there with the right size and writes the rest. A finished archive is recorded in
``DIR/.unpacked.json`` (with its checksum) and, unless ``keep_archives``, deleted (the archives
would double the disk space); a recorded archive is neither fetched nor checked again.

Archives whose members would land outside DIR (absolute paths, ``..``) or that hold anything
but folders and regular files (links, devices) are refused before anything of them is written.
A problem with one archive (unreachable, interrupted, corrupt) does not stop the others: the
run goes on and ends with one `DataError` naming every archive that failed; rerunning retries
exactly those.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from datamodules.datasets.fetch import byte_progress, download_folder, ensure_file, load_stamp, save_stamp
from datamodules.datasets.jamendo.checks import CHECKSUM_DIR, CHECKSUM_FILES, read_checksum_list
from infrastructure.errors import ConfigError, DataError

JAMENDO_BASE_URL = "https://cdn.freesound.org/mtg-jamendo/raw_30s/"
"""Where the MTG-Jamendo audio archives are served; the quality's folder (`QUALITY_FOLDERS`) is
appended. Not reachable from the machines this suite is tested on: check it before a real run."""

QUALITY_FOLDERS = {"low": "audio-low", "full": "audio"}

UNPACKED_STAMP = ".unpacked.json"
"""Archives completely unpacked (name -> SHA-256): never fetched or unpacked again."""

_BLOCK = 1 << 20


def _checked_members(archive: tarfile.TarFile, tar_path: Path) -> list[tarfile.TarInfo]:
    """Every member of ``archive``, after checking each is a folder or regular file inside DIR."""
    members = archive.getmembers()
    for member in members:
        pure = PurePosixPath(member.name)
        if (not member.name or pure.is_absolute() or ".." in pure.parts or "\\" in member.name
                or re.match(r"^[A-Za-z]:", member.name)):
            raise DataError(f"{tar_path}: refusing to unpack member {member.name!r}: it would land outside "
                            "the target folder (absolute path or '..')")
        if not (member.isdir() or member.isreg()):
            raise DataError(f"{tar_path}: refusing to unpack member {member.name!r}: not a regular file or "
                            "folder (link or device)")
    return members


def _extract_member(archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """Write one regular member to ``target`` through ``.NAME.part`` and a rename."""
    part = target.with_name(f".{target.name}.part")
    source = archive.extractfile(member)
    with source, open(part, "wb") as out:
        shutil.copyfileobj(source, out, _BLOCK)
    os.replace(part, target)


def unpack_archive(dest: Path, tar_path: Path, progress: bool = False) -> int:
    """Unpack ``tar_path`` into ``dest``, resuming: members already present under their name with
    the member's size are kept. Returns how many files were written.

    Raises:
        DataError: unsafe member, or not a readable TAR.
    """
    written = 0
    root = dest.resolve()
    try:
        with tarfile.open(tar_path, "r:") as archive:
            members = _checked_members(archive, tar_path)
            bar = byte_progress(f"unpacking {tar_path.name}", sum(m.size for m in members), 0, progress)
            try:
                for member in members:
                    target = dest / member.name
                    if root not in target.resolve().parents and target.resolve() != root:
                        raise DataError(f"{tar_path}: refusing to unpack member {member.name!r} outside {dest}")
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if not (target.is_file() and target.stat().st_size == member.size):
                        _extract_member(archive, member, target)
                        written += 1
                    bar.update(member.size)
            finally:
                bar.close()
    except tarfile.TarError as exc:
        raise DataError(f"{tar_path}: not a valid TAR archive ({exc}); delete it and rerun") from exc
    return written


def download_jamendo(
    dest_dir: str | Path,
    quality: str = "low",
    base_url: str | None = None,
    checksum_file: str | Path | None = None,
    archives: Iterable[str] | None = None,
    keep_archives: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download, verify and unpack MTG-Jamendo's audio archives into ``dest_dir``; return it.

    Args:
        dest_dir: target folder (created if needed); becomes the audio root (``DIR/00/...``).
        quality: ``low`` (``.low.mp3``, 156 GB) or ``full`` (``.mp3``, 508 GB).
        base_url: folder URL of the archives (default `JAMENDO_BASE_URL` + the quality's folder).
        checksum_file: the ``<sha256> <name>`` list (default: the one shipped for ``quality``).
        archives: only these archive names (default: all in the list, in its order).
        keep_archives: keep each TAR after unpacking it (default: delete it).
        progress: show progress on stderr.
        timeout: seconds to wait on a silent connection.

    Raises:
        ConfigError: unknown quality or archive names.
        DataError: one error naming every archive that failed (others are still done), a bad
            checksum list, an unwritable ``dest_dir``.
    """
    if quality not in QUALITY_FOLDERS:
        raise ConfigError(f"MTG-Jamendo audio quality must be one of {', '.join(QUALITY_FOLDERS)}, got {quality!r}")
    table = read_checksum_list(checksum_file if checksum_file is not None else CHECKSUM_DIR / CHECKSUM_FILES[quality])
    if base_url is None:
        base_url = JAMENDO_BASE_URL + QUALITY_FOLDERS[quality] + "/"
    names = list(table) if archives is None else list(archives)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ConfigError(f"MTG-Jamendo archives not in the checksum list: {', '.join(unknown[:5])}")
    dest = download_folder(dest_dir)
    stamp = load_stamp(dest)
    unpacked = load_stamp(dest, UNPACKED_STAMP)
    failures: list[str] = []
    for name in names:
        expected = table[name]
        if unpacked.get(name) == expected:
            continue
        try:
            ensure_file(dest, name, expected, base_url, stamp, progress, timeout)
            unpack_archive(dest, dest / name, progress)
            unpacked[name] = expected
            save_stamp(dest, unpacked, UNPACKED_STAMP)
            if not keep_archives:
                (dest / name).unlink()
                stamp.pop(name, None)
                save_stamp(dest, stamp)
        except DataError as exc:
            failures.append(f"{name}: {exc}")
        except OSError as exc:
            failures.append(f"{name}: {dest}: {exc.strerror or exc}")
    if failures:
        raise DataError(f"MTG-Jamendo download into {dest}: {len(failures)} of {len(names)} archives failed "
                        f"(rerun to retry them; the others are done): " + " | ".join(failures))
    return dest
