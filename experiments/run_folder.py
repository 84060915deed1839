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

from experiments.checkpoints import CHECKPOINT_DIR, CONFIG_FILE, LAST_CHECKPOINT, locate_checkpoint
from experiments.options import NON_IDENTITY_OPTIONS, RunOptions
from experiments.teachers import teacher_identities
from infrastructure.errors import ConfigError
from infrastructure.io import is_global_zero

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "CONFIG_YAML", "LAST_CHECKPOINT", "RunOutcome", "check_same_run",
           "config_digest", "default_run_dir", "locate_checkpoint", "run_dir_of", "warn_if_scale_changed"]

CONFIG_YAML = "config.yaml"


@dataclass(frozen=True)
class RunOutcome:
    """Where a finished run put its files, and its headline numbers."""

    run_dir: Path
    best_checkpoint: Path | None
    metrics: dict


def config_digest(options: RunOptions) -> str:
    """Short hash of the options that define a run (default run folders are named by it).

    Teachers (`--teacher`) count by their weights (`experiments.teachers.weights_identity`), not their paths, so
    reading them is part of naming the run: a missing teacher fails here, in one line.
    """
    identity = {k: v for k, v in sorted(options.to_dict().items()) if k not in NON_IDENTITY_OPTIONS}
    if options.teacher:
        identity["teacher"] = teacher_identities(options.teacher)
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]


def default_run_dir(options: RunOptions) -> Path:
    return Path(options.runs_root).resolve() / f"{options.model}-seed{options.seed}-{config_digest(options)}"


def run_dir_of(options: RunOptions) -> Path:
    return Path(options.run_dir).resolve() if options.run_dir else default_run_dir(options)


def check_same_run(run_dir: Path, resolved: dict) -> dict:
    """Refuse to resume a run folder with a different configuration (it would mix two experiments).

    Returns the saved configuration ({} when the folder has none).
    """
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    # teachers count by their weights ("teacher_identity"), not by the paths they were given as ("teacher")
    differing = sorted(k for k in set(saved) | set(resolved)
                       if k not in NON_IDENTITY_OPTIONS and k not in ("resolved", "teacher")
                       and saved.get(k) != resolved.get(k))
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

