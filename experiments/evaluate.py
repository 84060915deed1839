"""`run.py --evaluate`: test a checkpoint without training."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch

from callbacks.test_predictions import TestPredictionsCapture
from datamodules.frontend import MelConfig
from experiments.data import build_datamodule, model_spec, prepare_data_once
from experiments.options import RunOptions
from experiments.reporting.predictions import save_run_predictions
from experiments.reporting.results import write_results
from experiments.run_folder import RunOutcome
from experiments.train import save_run_config, versions
from experiments.trainer import build_trainer, check_run_options, close_process_group
from infrastructure.errors import ConfigError
from lightning_modules.tagging_module import TaggingModule


def evaluate_checkpoint(options: RunOptions, checkpoint: Path, run_dir: Path) -> RunOutcome:
    """`--evaluate`: test a checkpoint without training; write config.json and the result files into `run_dir`.

    The network, tag list, Mel settings, segment layout and per-tag thresholds come from the
    checkpoint; `options` say which data to test on (their vocabulary must give the checkpoint's
    tags) and how to run (devices, precision, batch size).
    """
    check_run_options(options)
    pl.seed_everything(options.seed, workers=True, verbose=False)
    module = TaggingModule.from_checkpoint(checkpoint)
    hparams = module.hparams
    name = hparams.network_config.get("name")
    if options.model and options.model != name:
        raise ConfigError(f"--model {options.model} does not match the checkpoint's network ({name})")
    options = options.replace(model=name)
    spec = model_spec(name)
    frontend = MelConfig.from_dict(hparams.frontend) if hparams.frontend is not None else None
    datamodule = build_datamodule(options, spec, dict(hparams.layout), frontend)
    info = prepare_data_once(datamodule)
    if tuple(info.tags) != tuple(hparams.tags):
        raise ConfigError(f"{checkpoint} was trained on {len(hparams.tags)} tags ({', '.join(hparams.tags[:5])}, ...), "
                          f"the data give {len(info.tags)} ({', '.join(info.tags[:5])}, ...): use the training run's "
                          "--data, --tags and --n-tags")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    resolved = dict(options.to_dict(), evaluated_checkpoint=str(checkpoint), resolved={
        "data_dir": str(info.data_dir), "clip_samples": info.clip_samples, "sample_rate": hparams.sample_rate,
        "tags": list(info.tags), "layout": dict(hparams.layout), "frontend": hparams.frontend,
        "network": hparams.network_config, "batch_size": datamodule.hparams.batch_size, "versions": versions()})
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(run_dir, resolved, options, info.tags)
    capture = TestPredictionsCapture()
    trainer = build_trainer(options, run_dir, [capture], logger=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {}
    if trainer.is_global_zero:
        save_run_predictions(run_dir, capture, datamodule, module.thresholds.cpu(), options,
                                 module.threshold_fallback.cpu())
        metrics = write_results(run_dir, resolved, module.last_test_report, module.thresholds.cpu(),
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

