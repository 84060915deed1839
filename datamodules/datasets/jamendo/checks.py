"""What an MTG-Jamendo download is checked against: the published SHA-256 of every audio archive.

The metadata repository lists them, one ``<sha256> <name>`` per line; the lists of both qualities ship
in ``checksums/`` beside this module, copied unchanged from ``MTG/mtg-jamendo-dataset``
``data/download/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from infrastructure.errors import DataError

CHECKSUM_FILES = {"low": "raw_30s_audio-low_sha256_tars.txt", "full": "raw_30s_audio_sha256_tars.txt"}
CHECKSUM_DIR = Path(__file__).resolve().parent / "checksums"

_LINE_RE = re.compile(r"^([0-9a-fA-F]{64}) +(\S+\.tar)$")


def read_checksum_list(path: str | Path) -> dict[str, str]:
    """``{archive name: sha256}`` of a ``<sha256> <name>.tar`` list; `DataError` with file and
    line for anything else (blank lines are allowed)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the archive checksum list: {exc}") from exc
    table: dict[str, str] = {}
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        match = _LINE_RE.match(line.strip())
        if match is None:
            raise DataError(f"{path}, line {line_no}: expected '<64 hex digits> <name>.tar', got {line.strip()[:80]!r}")
        digest, name = match.group(1).lower(), match.group(2)
        if "/" in name or name in table:
            raise DataError(f"{path}, line {line_no}: archive name {name!r} has a '/' or is listed twice")
        table[name] = digest
    if not table:
        raise DataError(f"{path}: no archives listed")
    return table
