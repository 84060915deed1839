"""`run.py --evaluate RUN_A RUN_B ...`: an ensemble of taggers, scored like one run.

Every member is evaluated on the validation and the test clips with its own data module (its
own Mel frontend, segment layout and clip length: a waveform model and a Mel model can be
members of one ensemble), its segment probabilities averaged per clip as usual; then the clip
probabilities of the members are averaged clip by clip (matched by MTAT clip id). Thresholds
are chosen for the ensemble itself, on its averaged validation probabilities, with the same
TPR = 1 - FPR rule as a single run (`metrics.equal_error_thresholds`); the test metrics,
per_tag.csv, results.md and test_predictions.npz are written as for `--evaluate RUN`.

Members must predict the same tags on the same split of the same data: averaging probabilities
of different vocabularies or test sets is meaningless, so that is one error naming the two runs.
An ensemble evaluates in one process (its members run one after another).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from experiments.data import prepare_data_once
from experiments.options import RunOptions
from experiments.reporting.predictions import PREDICTIONS_FILE, Predictions, write_predictions
from experiments.reporting.results import write_results
from experiments.resolve import build_datamodule, resolve_checkpoint
from experiments.run_folder import CONFIG_FILE, RunOutcome
from experiments.train import versions
from experiments.trainer import build_trainer
from infrastructure.errors import ConfigError, DataError
from infrastructure.io import write_json_atomic, write_text_atomic
from lightning_modules.metrics import equal_error_thresholds, tagging_metrics, threshold_fallbacks
from lightning_modules.tagging_module import TaggingModule

ENSEMBLES_DIR = "ensembles"


class EvaluationCapture(Callback):
    """Keeps the clip-level (probs, targets, annotation rows) of the last validation and the last test.

    Runs before the module's own epoch-end hooks (Lightning calls callbacks first); `compute()`
    caches its result, so the module's later call returns the same tensors.
    """

    def __init__(self) -> None:
        super().__init__()
        self.results: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _keep(self, stage: str, metric) -> None:
        probs, targets, rows = metric.compute()
        self.results[stage] = (probs.cpu(), targets.cpu(), rows.cpu())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._keep("valid", pl_module.val_predictions)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._keep("test", pl_module.test_predictions)


@dataclass
class Member:
    """One model of the ensemble: where it came from and what it predicted (clip ids ascending)."""

    label: str
    checkpoint: Path
    model: str
    parameters: int
    tags: tuple[str, ...]
    split: str
    data: str
    stages: dict  # stage -> (clip_ids, rows, probs float32, targets uint8)


def _by_clip(rows: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor, clip_id_of_row: np.ndarray):
    rows = rows.numpy().astype(np.int64)
    clip_ids = clip_id_of_row[rows]
    order = np.argsort(clip_ids, kind="stable")
    return clip_ids[order], rows[order], probs.numpy()[order], targets.numpy().astype(np.uint8)[order]


def _check_compatible(a: dict, b: dict) -> None:
    """One ConfigError naming both runs when their tag lists, splits or datasets differ."""
    if list(a["tags"]) != list(b["tags"]):
        raise ConfigError(f"{a['label']} and {b['label']} cannot be ensembled: their tag lists differ "
                          f"({len(a['tags'])} tags: {', '.join(a['tags'][:3])}, ... vs {len(b['tags'])}: "
                          f"{', '.join(b['tags'][:3])}, ...); use runs trained with the same --tags and --n-tags")
    for what in ("split", "data"):
        if a[what] != b[what]:
            raise ConfigError(f"{a['label']} and {b['label']} cannot be ensembled: their {what} differs "
                              f"({a[what]} vs {b[what]}); use runs of the same --{what}")


def _identity(label: str, options: RunOptions, checkpoint: Path) -> dict:
    """What must agree between members, read from the checkpoint and the options before any evaluation."""
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=False).get("hyper_parameters") or {}
    if "tags" not in hparams:
        raise DataError(f"{checkpoint}: not a checkpoint of this suite (no tag list in it)")
    data, split = options.data, options.split
    if options.dataset == "mtg-jamendo":
        split = str(options.jamendo_split or 0)
        data = f"mtg-jamendo:{data}:{options.jamendo_subset or 'top50tags'}"
        if options.data == "synthetic":
            data += (f"({options.synthetic_tracks}, {options.synthetic_min_seconds}, {options.synthetic_max_seconds}, "
                     f"seed {options.synthetic_seed})")
    elif data == "synthetic":
        data = f"synthetic({options.synthetic_clips} clips, {options.synthetic_clip_samples} samples, " \
               f"seed {options.synthetic_seed})"
    return {"label": label, "tags": list(hparams["tags"]), "split": split, "data": data}


def _evaluate_member(label: str, options: RunOptions, checkpoint: Path, run_dir: Path) -> Member:
    pl.seed_everything(options.seed, workers=True, verbose=False)
    module = TaggingModule.from_checkpoint(checkpoint)
    run = resolve_checkpoint(options, checkpoint, dict(module.hparams))
    if run.processes > 1:
        raise ConfigError("an ensemble evaluates in one process: leave --devices/--num-nodes at one device")
    datamodule = build_datamodule(run)
    try:
        run = run.with_data(prepare_data_once(datamodule))
    except ConfigError as error:
        raise ConfigError(f"{label}: {error}") from None
    capture = EvaluationCapture()
    trainer = build_trainer(run, run_dir, [capture], logger=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    clip_id_of_row = datamodule.clip_ids()
    stages = {stage: _by_clip(rows, probs, targets, clip_id_of_row)
              for stage, (probs, targets, rows) in capture.results.items()}
    parameters = sum(p.numel() for p in module.network.parameters())
    return Member(label, checkpoint, run.spec.name, parameters, run.tags, run.options.split, run.data_dir, stages)


def _average(members: list[Member], stage: str):
    """(clip_ids, rows, mean probs, targets) of a stage; every member must have scored the same clips."""
    first = members[0]
    clip_ids, rows, _, targets = first.stages[stage]
    for other in members[1:]:
        ids = other.stages[stage][0]
        if not np.array_equal(ids, clip_ids):
            raise DataError(f"{first.label} and {other.label} were evaluated on different {stage} clips "
                            f"({len(clip_ids)} vs {len(ids)}); give both the same --limit-*-batches (or none)")
        if not np.array_equal(other.stages[stage][3], targets):
            raise DataError(f"{first.label} and {other.label} give the same {stage} clips different tags")
    probs = np.mean(np.stack([m.stages[stage][2].astype(np.float64) for m in members]), axis=0)
    return clip_ids, rows, probs.astype(np.float32), targets


def default_ensemble_dir(runs_root: str | Path, checkpoints: list[Path]) -> Path:
    digest = hashlib.sha1("\n".join(str(c) for c in checkpoints).encode()).hexdigest()[:8]
    return Path(runs_root).resolve() / ENSEMBLES_DIR / f"ensemble{len(checkpoints)}-{digest}"


def evaluate_ensemble(members: list[tuple[str, RunOptions, Path]], run_dir: Path | None = None):
    """Evaluate every (label, options, checkpoint), average per clip, threshold on validation, write the folder.

    Returns the `RunOutcome` of the ensemble's evaluation folder.
    """
    if len(members) < 2:
        raise ConfigError("an ensemble needs at least two runs or checkpoints")
    identities = [_identity(label, options, checkpoint) for label, options, checkpoint in members]
    for other in identities[1:]:
        _check_compatible(identities[0], other)  # before minutes of evaluation
    checkpoints = [checkpoint for _, _, checkpoint in members]
    run_dir = Path(run_dir) if run_dir else default_ensemble_dir(members[0][1].runs_root, checkpoints)
    run_dir.mkdir(parents=True, exist_ok=True)
    evaluated = [_evaluate_member(label, options, checkpoint, run_dir) for label, options, checkpoint in members]
    tags = list(evaluated[0].tags)
    _, _, val_probs, val_targets = _average(evaluated, "valid")
    clip_ids, rows, test_probs, test_targets = _average(evaluated, "test")
    thresholds = equal_error_thresholds(torch.from_numpy(val_probs), torch.from_numpy(val_targets))
    fell_back = threshold_fallbacks(torch.from_numpy(val_targets)).to(torch.int8)
    report = tagging_metrics(torch.from_numpy(test_probs), torch.from_numpy(test_targets), tags, thresholds=thresholds,
                             threshold_fell_back=fell_back)
    options = members[0][1]
    name = "ensemble(" + " + ".join(m.model for m in evaluated) + ")"
    resolved = dict(options.to_dict(), model=name, ensemble=[
        {"label": m.label, "checkpoint": str(m.checkpoint), "model": m.model, "parameters": m.parameters}
        for m in evaluated], resolved={"data_dir": evaluated[0].data, "tags": tags,
                                       "parameters": sum(m.parameters for m in evaluated), "versions": versions()})
    write_json_atomic(run_dir / CONFIG_FILE, resolved)
    write_text_atomic(run_dir / "tags.txt", "\n".join(tags) + "\n")
    write_predictions(run_dir / PREDICTIONS_FILE, Predictions(
        clip_ids, rows, test_targets, test_probs, thresholds.numpy(), tags, options.split, options.tags,
        evaluated[0].data, fell_back.numpy()))
    metrics = write_results(run_dir, resolved, report, thresholds, best_checkpoint=None,
                            best_val={"monitor": None, "best": None}, epochs=None)
    return RunOutcome(run_dir, None, metrics)
