"""`run.py --evaluate`: test a checkpoint without training."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch

from callbacks.test_predictions import TestPredictionsCapture
from experiments.data import prepare_data_once
from experiments.options import RunOptions
from experiments.reporting.predictions import save_run_predictions
from experiments.reporting.results import write_results
from experiments.resolve import build_datamodule, resolve_checkpoint
from experiments.run_folder import RunOutcome
from experiments.train import save_run_config, versions
from experiments.trainer import build_trainer, close_process_group
from lightning_modules.tagging_module import TaggingModule


def evaluate_checkpoint(options: RunOptions, checkpoint: Path, run_dir: Path) -> RunOutcome:
    """`--evaluate`: test a checkpoint without training; write config.json and the result files into `run_dir`.

    The network, tag list, Mel settings, segment layout and per-tag thresholds come from the
    checkpoint; `options` say which data to test on (their vocabulary must give the checkpoint's
    tags) and how to run (devices, precision, batch size).
    """
    pl.seed_everything(options.seed, workers=True, verbose=False)
    module = TaggingModule.from_checkpoint(checkpoint)
    run = resolve_checkpoint(options, checkpoint, dict(module.hparams))
    datamodule = build_datamodule(run)
    run = run.with_data(prepare_data_once(datamodule))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config = run.config(versions())
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(run_dir, config, run.options, run.tags)
    capture = TestPredictionsCapture()
    trainer = build_trainer(run, run_dir, [capture], logger=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {}
    if trainer.is_global_zero:
        save_run_predictions(run_dir, capture, datamodule, module.thresholds.cpu(), run.options,
                             module.threshold_fallback.cpu())
        metrics = write_results(run_dir, config, module.last_test_report, module.thresholds.cpu(),
                                best_checkpoint=checkpoint, best_val=_saved_best_val(saved),
                                epochs=int(saved.get("epoch", 0)) + 1)
    close_process_group()
    return RunOutcome(run_dir, checkpoint, metrics)


def _saved_best_val(checkpoint: dict) -> dict:
    """The monitored validation score a checkpoint's ModelCheckpoint state recorded (None when absent)."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, dict):
            score = state.get("best_model_score")
            return {"monitor": state.get("monitor"),
                    "best": float(score) if score is not None else None}
    return {"monitor": None, "best": None}

