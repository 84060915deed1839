"""Where a run folder keeps its configuration and checkpoints, and which checkpoint a path names.

Below `experiments.run_folder` (which names and checks run folders) and `experiments.teachers` (which reads
teachers' checkpoints), both of which find checkpoints this way; `experiments.run_folder` re-exports it.
"""

from __future__ import annotations

import json
from pathlib import Path

from infrastructure.errors import DataError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


def locate_checkpoint(path: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint file, the run folder it belongs to or None) for a .ckpt file or a run folder.

    A run folder means its best checkpoint (metrics.json's, else the one checkpoints/best-*.ckpt).
    """
    path = Path(path).expanduser().resolve()
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
        return path, (run_dir if (run_dir / CONFIG_FILE).is_file() else None)
    if not path.is_dir():
        raise DataError(f"{path}: checkpoint not found (no such file or run folder)")
    metrics = path / "metrics.json"
    if metrics.is_file():
        best = json.loads(metrics.read_text()).get("best_checkpoint")
        if best and Path(best).is_file():
            return Path(best), path
    candidates = sorted((path / CHECKPOINT_DIR).glob("best-*.ckpt"))
    if len(candidates) == 1:
        return candidates[0], path
    if len(candidates) > 1:
        raise DataError(f"{path}: several best-*.ckpt in {CHECKPOINT_DIR}/; name the checkpoint file")
    raise DataError(f"{path}: no checkpoint here (expected metrics.json or {CHECKPOINT_DIR}/best-*.ckpt)")
