"""The teachers of a run (`--teacher RUN_OR_CKPT ...`): found, read once, identified by their weights, checked.

A teacher is a finished run folder (its best checkpoint, as `--evaluate` finds it) or a checkpoint file.
Each is read once per process (`read_teacher`, cached by file, size and modification time): its
hyperparameters, its network's weights, and its identity, a digest of the weights and of what shapes its
input and output (network, Mel settings, segments, tags). The identity, not the path, is what a run folder's
name and a resumed run's check take (`experiments.run_folder`): moving a teacher changes nothing, retraining
it into the same folder makes another run.

`experiments.resolve` refuses, in one line and before any data work, what cannot be distilled: a missing or
unfinished teacher, one trained on audio at another rate, on another dataset or split (its training clips
could be the student's test clips), with another tag list, whose segments are longer than the student's crop
(it could not see that crop whole), a teacher listed twice, and a student that is itself one of its
teachers. A checkpoint file without its run folder carries no dataset description: its tag list is checked
against the data once they are prepared (`check_teacher_tags`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from experiments.checkpoints import CONFIG_FILE, locate_checkpoint
from experiments.options import RunOptions
from infrastructure.errors import ConfigError, DataError

IDENTITY_HPARAMS = ("network_config", "tags", "frontend", "layout", "sample_rate")
"""What, beside the weights, makes a teacher's probabilities what they are."""


@dataclass(frozen=True, eq=False)
class TeacherCheckpoint:
    """One teacher as read from disk."""

    given: str
    checkpoint: Path
    run_dir: Path | None
    hparams: dict
    state: dict
    """The network's weights (the checkpoint's ``network.*`` entries, prefix removed)."""
    identity: str
    options: RunOptions | None
    """The teacher run's options (its config.json), None for a checkpoint file alone."""

    @property
    def label(self) -> str:
        return str(self.run_dir or self.checkpoint)

    @property
    def model(self) -> str:
        return str(self.hparams["network_config"].get("name"))

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.hparams["tags"])

    @property
    def segment_samples(self) -> int:
        return int(self.hparams["layout"]["segment_samples"])

    def describe(self) -> dict:
        """What config.json records of the teacher."""
        return {"given": self.given, "checkpoint": str(self.checkpoint), "model": self.model,
                "identity": self.identity, "segment_samples": self.segment_samples}


_READ: dict[tuple, TeacherCheckpoint] = {}


def weights_identity(hparams: dict, state: dict) -> str:
    """A digest of a network's weights and of the settings in `IDENTITY_HPARAMS` (16 hex digits)."""
    import torch

    digest = hashlib.sha256()
    digest.update(json.dumps({k: hparams.get(k) for k in IDENTITY_HPARAMS}, sort_keys=True, default=str).encode())
    for name in sorted(state):
        tensor = state[name]
        digest.update(name.encode())
        if isinstance(tensor, torch.Tensor):
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def read_teacher(given: str | Path) -> TeacherCheckpoint:
    """The teacher ``given`` names (a run folder or a .ckpt file), read once per process.

    Raises:
        DataError: no such file or folder, a run that has not finished, or a file that is not a checkpoint of
            this suite (one line each).
    """
    given = str(given)
    path = Path(given).expanduser()
    if path.is_dir() and (path / CONFIG_FILE).is_file() and not (path / "metrics.json").is_file():
        raise DataError(f"--teacher {given}: this run has not finished (no metrics.json): finish it first (rerun its "
                        "command), or give one of its checkpoints")
    try:
        checkpoint, run_dir = locate_checkpoint(path)
    except DataError as error:
        raise DataError(f"--teacher {error}") from None
    stat = checkpoint.stat()
    key = (str(checkpoint), stat.st_size, stat.st_mtime_ns)
    if key in _READ:
        return _READ[key]
    import torch

    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file
        raise DataError(f"--teacher {given}: {checkpoint} is not a readable checkpoint "
                        f"({type(error).__name__}: {error})") from None
    hparams = dict(saved.get("hyper_parameters") or {}) if isinstance(saved, dict) else {}
    if not {"network_config", "tags", "layout"} <= set(hparams) or "state_dict" not in saved:
        raise DataError(f"--teacher {given}: {checkpoint} is not a checkpoint of this suite (no network config, tag "
                        "list or segment layout in it)")
    state = {k[len("network."):]: v for k, v in saved["state_dict"].items() if k.startswith("network.")}
    options = None
    if run_dir is not None:
        options = RunOptions.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    teacher = TeacherCheckpoint(given, checkpoint, run_dir, hparams, state, weights_identity(hparams, state), options)
    _READ[key] = teacher
    return teacher


def teacher_identities(paths) -> list[str]:
    """The identities of the teachers ``paths`` name (what run-folder names take)."""
    return [read_teacher(path).identity for path in paths]


def check_teacher_tags(teachers, tags) -> None:
    """ConfigError when the teachers predict another tag list than the prepared data give the student."""
    for teacher in teachers:
        if teacher.tags != tuple(tags):
            raise ConfigError(f"--teacher {teacher.label} predicts {len(teacher.tags)} tags "
                              f"({', '.join(teacher.tags[:3])}, ...), the data give the student {len(tags)} "
                              f"({', '.join(tuple(tags)[:3])}, ...): train the student with its teacher's --data, --tags "
                              "and --n-tags")
