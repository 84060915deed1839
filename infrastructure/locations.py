"""Where the suite keeps what it makes once and reuses: the cache of generated datasets and decoded waveforms."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_root() -> Path:
    """`$MTAT_TAGGING_CACHE`, else `$XDG_CACHE_HOME/mtat-tagging`, else `~/.cache/mtat-tagging`."""
    if os.environ.get("MTAT_TAGGING_CACHE"):
        return Path(os.environ["MTAT_TAGGING_CACHE"]).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return (base / "mtat-tagging").resolve()
