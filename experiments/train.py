"""One training run, start to finish: data, model, callbacks, Trainer, fit, test, result files.

`run_experiment(options)` is what `python run.py --model ...` does; sweeps call it once per
trial. Everything the run resolved from its options (tag list, clip length, segment layout, Mel
settings, network config, package versions) is written to `config.json` in the run folder before
training starts, beside `config.yaml` (the options alone); the run folder is enough to resume
(`--resume RUN_DIR`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from callbacks.history import HISTORY_FILE, TrainingHistory
from callbacks.rng_state import RNGStateCheckpoint
from callbacks.schedules import build_schedule
from callbacks.step_seeds import StepSeeds
from callbacks.test_predictions import TestPredictionsCapture
from datamodules.datamodule import MTATDataModule
from experiments.cli import dump_yaml
from experiments.data import prepare_data_once
from experiments.interruptions import ctrl_c_stops, say_if_resume_inexact
from experiments.options import RunOptions
from experiments.peers import peer_lost
from experiments.reporting.figures import figures_for_run
from experiments.reporting.loggers import build_logger, finish_logger, log_run_results
from experiments.reporting.predictions import save_run_predictions
from experiments.reporting.results import write_results
from experiments.resolve import ResolvedRun, build_datamodule, build_module, mel_settings, network_overrides, resolve
from experiments.run_folder import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CONFIG_YAML,
    LAST_CHECKPOINT,
    RunOutcome,
    check_same_run,
    run_dir_of,
    warn_if_scale_changed,
)
from experiments.trainer import build_trainer, close_process_group
from infrastructure.io import is_global_zero, write_json_atomic, write_text_atomic
from lightning_modules.registry import build_network, input_shape, model_spec, network_config, segment_layout
from lightning_modules.tagging_module import TaggingModule


def versions() -> dict:
    import lightning
    import nnAudio
    import torchaudio
    import torchmetrics
    return {"torch": torch.__version__, "torchaudio": torchaudio.__version__, "lightning": lightning.__version__,
            "torchmetrics": torchmetrics.__version__, "nnAudio": getattr(nnAudio, "__version__", "unknown")}


def build_callbacks(run: ResolvedRun, run_dir: Path) -> tuple[list[Callback], ModelCheckpoint, object]:
    """The run's callbacks (in the order they must act), its checkpoint callback, and its optimiser source."""
    options = run.options
    checkpoint = ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename="best-{epoch:03d}",
                                 monitor=options.monitor, mode=options.monitor_mode, save_top_k=1,
                                 save_last=True, auto_insert_metric_name=False)
    schedule, optimizer_source = build_schedule(options)
    # the history after the schedule's callbacks: it sees their restarts at the same validation end
    callbacks: list[Callback] = [checkpoint, RNGStateCheckpoint(), StepSeeds(options.seed), *schedule,
                                 TrainingHistory(run_dir / HISTORY_FILE)]
    return callbacks, checkpoint, optimizer_source


def save_run_config(run_dir: Path, config: dict, options: RunOptions, tags) -> None:
    """config.json (options and what was resolved from them), config.yaml (the options) and tags.txt."""
    if is_global_zero():
        write_json_atomic(run_dir / CONFIG_FILE, config)
        write_text_atomic(run_dir / CONFIG_YAML, dump_yaml(options))
        write_text_atomic(run_dir / "tags.txt", "\n".join(tags) + "\n")


def _checkpoint_step(checkpoint: Path | None, options: RunOptions) -> int | None:
    """The global step a resumed run starts from, which its CSV log keeps rows up to (only that logger asks)."""
    if checkpoint is None or (options.logger or "") != "csv":
        return None
    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"])


def run_experiment(options: RunOptions, extra_callbacks: tuple[Callback, ...] = ()) -> RunOutcome:
    """Train, keep the best checkpoint, test it, and write the run folder's result files.

    `extra_callbacks` join the run's own (a sweep adds its pruning callback here).
    """
    run = resolve(options)  # every check before the data are prepared: a bad option fails at once
    pl.seed_everything(options.seed, workers=True, verbose=False)
    datamodule = build_datamodule(run)
    run = run.with_data(prepare_data_once(datamodule))
    module = build_module(run)
    config = run.config(versions())
    run_dir = run_dir_of(options)
    last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    resume_from = last if last.is_file() else None
    if (run_dir / "metrics.json").is_file():
        # Rerunning the command of a finished run (a requeued job, a sweep retry) changes nothing.
        check_same_run(run_dir, config)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        print(f"{run_dir} already holds this finished run; pass another --run-dir to train again", file=sys.stderr)
        best = Path(metrics["best_checkpoint"]) if metrics.get("best_checkpoint") else None
        return RunOutcome(run_dir, best, metrics)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume_from is not None:
        warn_if_scale_changed(run_dir, check_same_run(run_dir, config), config)
        say_if_resume_inexact(run, run_dir)
        if is_global_zero():  # Lightning's own line is silenced with its other info lines
            print(f"resuming {run_dir} from {resume_from.relative_to(run_dir)}", file=sys.stderr, flush=True)
    save_run_config(run_dir, config, options, run.tags)
    if options.compile:
        # in place: state_dict keys stay those of the plain network
        module.network.compile(backend=options.compile_backend or "inductor")
    callbacks, checkpoint, module.optimizer_source = build_callbacks(run, run_dir)
    capture = TestPredictionsCapture()
    callbacks += [capture, *extra_callbacks]
    logger = build_logger(options, run_dir, config=config, resume_step=_checkpoint_step(resume_from, options))
    failed = True
    try:
        trainer = build_trainer(run, run_dir, callbacks, logger)
        with ctrl_c_stops(run_dir):
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
            best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
            trainer.test(module, datamodule=datamodule, ckpt_path=str(best) if best else None, verbose=False)
        metrics = {}
        if trainer.is_global_zero:
            save_run_predictions(run_dir, capture, datamodule, module.thresholds.cpu(), options,
                                 module.threshold_fallback.cpu())
            metrics = write_results(run_dir, config, module.last_test_report, module.thresholds.cpu(),
                                    best_checkpoint=best, best_val=_best_val(checkpoint), epochs=trainer.current_epoch)
            _figures_and_tables(run_dir, module, datamodule, capture, logger, metrics, options)
        failed = False
    except RuntimeError as error:  # a dead or silent DDP peer: one line (experiments/peers.py)
        lost = peer_lost(error, options, run_dir)
        if lost is None:
            raise
        raise lost from error
    finally:
        finish_logger(logger, failed=failed)
    close_process_group()
    return RunOutcome(run_dir, best, metrics)


def _figures_and_tables(run_dir: Path, module: TaggingModule, datamodule: MTATDataModule,
                        capture: TestPredictionsCapture, logger, metrics: dict, options: RunOptions) -> None:
    """The run's figures (PNG in RUN_DIR/figures) and, for W&B, the per-tag table, figures and summary."""
    figures = {}
    try:
        if options.figures:
            figures = figures_for_run(run_dir, module, datamodule, capture, run_dir / HISTORY_FILE,
                                      report=module.last_test_report)
    except Exception as error:  # a plotting problem must not cost the finished run its logging
        print(f"warning: figures not written ({type(error).__name__}: {error})", file=sys.stderr)
    summary = {f"best_validation/{k}": v for k, v in metrics.get("best_validation", {}).items()}
    log_run_results(logger, module.last_test_report, figures, summary)


def _best_val(checkpoint: ModelCheckpoint) -> dict:
    score = checkpoint.best_model_score
    return {"monitor": checkpoint.monitor, "best": float(score) if score is not None else None}

def describe_network(options: RunOptions) -> str:
    """`--summary`: the network for MTAT's clip length, layer by layer, with both parameter counts."""
    from infrastructure.audio import MTAT_CLIP_SAMPLES
    from lightning_modules.networks.summary import format_summary, layer_summary

    spec = model_spec(options.model)
    frontend = mel_settings(spec, options)
    layout = segment_layout(spec, MTAT_CLIP_SAMPLES, frontend, options.segments_per_clip,
                            options.train_crop, options.random_crops_per_clip)
    shape = input_shape(frontend, layout)
    network = build_network(network_config(spec, shape, options.n_tags, **network_overrides(options)))
    segments = f"{layout.segments_per_clip} segment(s) of {layout.segment_samples} samples per clip"
    mel = f"; Mel n_fft {frontend.n_fft}, hop {frontend.hop_length}, {frontend.n_mels} bands" if frontend else ""
    title = f"{spec.name} ({spec.table}): input {shape}, {segments}{mel}"
    return format_summary(layer_summary(network, shape), title)
