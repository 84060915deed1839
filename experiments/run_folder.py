"""Run folders: their names, their saved configuration, and the checkpoints in them.

A run folder holds `config.json` (the options and everything resolved from them), `config.yaml`
(the options alone: `run.py --config RUN_DIR/config.yaml` is the same run), `tags.txt`,
`checkpoints/` and, once finished, the result files. Its default name is the model, the seed and
a digest of the identity options, so rerunning a command finds (and resumes) its run.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from experiments.options import NON_IDENTITY_OPTIONS, RunOptions
from infrastructure.errors import ConfigError, DataError
from infrastructure.io import is_global_zero

CONFIG_FILE = "config.json"
CONFIG_YAML = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


@dataclass(frozen=True)
class RunOutcome:
    """Where a finished run put its files, and its headline numbers."""

    run_dir: Path
    best_checkpoint: Path | None
    metrics: dict


def config_digest(options: RunOptions) -> str:
    """Short hash of the options that define a run (default run folders are named by it)."""
    identity = {k: v for k, v in sorted(options.to_dict().items()) if k not in NON_IDENTITY_OPTIONS}
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]


def default_run_dir(options: RunOptions) -> Path:
    return Path(options.runs_root).resolve() / f"{options.model}-seed{options.seed}-{config_digest(options)}"


def run_dir_of(options: RunOptions) -> Path:
    return Path(options.run_dir).resolve() if options.run_dir else default_run_dir(options)


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

def check_same_run(run_dir: Path, resolved: dict) -> dict:
    """Refuse to resume a run folder with a different configuration (it would mix two experiments).

    Returns the saved configuration ({} when the folder has none).
    """
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    differing = sorted(k for k in set(saved) | set(resolved)
                       if k not in NON_IDENTITY_OPTIONS and k != "resolved" and saved.get(k) != resolved.get(k))
    if differing:
        raise ConfigError(f"{run_dir} holds a run with other settings ({', '.join(differing)}); "
                          "resume it with --resume, or pick another --run-dir")
    return saved


def warn_if_scale_changed(run_dir: Path, saved_config: dict, resolved: dict) -> None:
    """Resuming on another number of processes is allowed (a job requeued on fewer GPUs), but the
    global batch, and with it the gradient noise and the steps per epoch, changes: say so."""
    saved = saved_config.get("resolved", {})
    before, now = saved.get("processes"), resolved["resolved"]["processes"]
    if before is not None and before != now and is_global_zero():
        print(f"warning: {run_dir} trained with {before} process(es) (global batch {saved.get('global_batch_size')}); "
              f"it resumes with {now} (global batch {resolved['resolved']['global_batch_size']}): the steps per "
              "epoch and the effective batch change from here on", file=sys.stderr)

