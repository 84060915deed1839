"""The files `--tag` reads: explicit files as given, folders walked recursively for audio suffixes.

The walk is the data layer's (`datamodules.audio_files`), shared with `--unlabeled DIR`; this module keeps the
tagging package's name for it.
"""

from __future__ import annotations

from datamodules.audio_files import AUDIO_EXTENSIONS, Inputs, find_audio_files

__all__ = ["AUDIO_EXTENSIONS", "Inputs", "find_audio_files"]
