"""Audio files named on the command line: explicit files as given, folders walked recursively for audio suffixes.

What `--tag` reads (`tagging.files`) and what `--unlabeled DIR` decodes into a store (`datamodules.unlabeled`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

AUDIO_EXTENSIONS = frozenset({".mp3", ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff",
                              ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"})
"""Suffixes taken when a folder is walked (a file named explicitly is always tried)."""


@dataclass
class Inputs:
    """The audio files found, the inputs that failed before decoding, and files ignored in folders."""

    files: list[Path]
    failures: list[tuple[str, str]]
    ignored: list[Path]


def find_audio_files(paths: Sequence[str | Path]) -> Inputs:
    """Explicit files as given; folders walked recursively for audio suffixes (hidden entries skipped).

    A file named and also found in a folder is listed once.
    """
    files: list[Path] = []
    failures: list[tuple[str, str]] = []
    ignored: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = 0
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if name.startswith("."):
                        continue
                    candidate = Path(root) / name
                    if candidate.suffix.lower() in AUDIO_EXTENSIONS:
                        files.append(candidate)
                        found += 1
                    else:
                        ignored.append(candidate)
            if not found:
                failures.append((str(path), "no audio files in this folder"))
        elif path.exists():
            files.append(path)
        else:
            failures.append((str(path), "no such file or folder"))
    unique: dict[Path, Path] = {}
    for file in files:
        unique.setdefault(file.resolve(), file)
    return Inputs(list(unique.values()), failures, ignored)
