"""Fetching a dataset's files: resumable HTTP(S) or file:// downloads checked against published SHA-256s.

What every dataset's ``download.py`` shares (`datamodules.datasets.mtat.download`,
`datamodules.datasets.jamendo.download`): `ensure_file` makes ``DIR/NAME`` a verified copy of
``BASE_URL/NAME``. An unfinished file is kept as ``NAME.part`` and continued with an HTTP Range request
(a server that ignores Range sends the whole file again, which is then restarted). A file whose SHA-256
differs from the published value is renamed ``NAME.corrupt`` (kept for inspection, never resumed from or
re-used) and a `DataError` names it; rerunning downloads it afresh. Verified files are remembered in
``DIR/.verified.json`` (size, mtime and checksum: `load_stamp`, `save_stamp`), so reruns need not hash
them again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from infrastructure.errors import DataError
from infrastructure.io import write_text_atomic

VERIFIED_STAMP = ".verified.json"
"""Records (size, mtime, sha256) of files already verified, so reruns need not re-hash them."""

_BLOCK = 1 << 20


def download_folder(dest_dir: str | Path) -> Path:
    """``dest_dir``, created if needed; DataError when it cannot be created or written to."""
    dest = Path(dest_dir)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"download folder {dest}: cannot create it: {exc.strerror or exc}") from exc
    if not os.access(dest, os.W_OK):
        raise DataError(f"download folder {dest} is not writable")
    return dest


def byte_progress(label: str, total: int | None, initial: int, enabled: bool):
    """A byte progress bar on stderr (none when not ``enabled``)."""
    from tqdm.auto import tqdm

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


def load_stamp(dest: Path, name: str = VERIFIED_STAMP) -> dict:
    """The JSON object ``dest/name`` (the verified files by default), or {} when missing or unreadable."""
    try:
        stamp = json.loads((dest / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def save_stamp(dest: Path, stamp: dict, name: str = VERIFIED_STAMP) -> None:
    """Write ``stamp`` to ``dest/name`` atomically."""
    write_text_atomic(dest / name, json.dumps(stamp, indent=2, sort_keys=True))


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
        bar = byte_progress(part.name.removesuffix(".part"), total, have, progress)
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


def ensure_file(dest: Path, name: str, expected: str, base_url: str, stamp: dict, progress: bool,
                timeout: float) -> None:
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
    save_stamp(dest, stamp)


