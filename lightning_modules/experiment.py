"""One training run, start to finish: data, model, callbacks, Trainer, fit, test, result files.

`run_experiment(options)` is what `python run.py --model ...` does; sweeps call it once per
trial. `options` is the flat dict of run.py's options (see `run.py --help`); everything the
run resolved from them (tag list, clip length, segment layout, Mel settings, network config,
package versions) is written to `config.json` in the run folder before training starts, and
the run folder is enough to resume (`--resume RUN_DIR`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar

from callbacks import GlobalDecayRestart, LocalDecay, RNGStateCheckpoint
from callbacks.history import HISTORY_FILE, TrainingHistory
from callbacks.step_seeds import StepSeeds
from datamodules.audio import SAMPLE_RATE
from datamodules.cache import open_cache
from datamodules.datamodule import DatasetInfo, MTATDataModule
from datamodules.errors import ConfigError, DataError
from datamodules.frontend import MelConfig
from datamodules.locking import file_lock
from lightning_modules.base import TaggingModule
from lightning_modules.files import write_json_atomic, write_text_atomic
from lightning_modules.loggers import build_logger, finish_logger, log_run_results
from lightning_modules.registry import MODELS, ModelSpec, build_network, input_shape, network_config, segment_layout
from lightning_modules.figures import TestPredictionsCapture, figures_for_run
from lightning_modules.interruptions import say_if_resume_inexact
from lightning_modules.results import write_results

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"

# Options that change neither what is trained nor how: two runs differing only in these share a run folder.
NON_IDENTITY_OPTIONS = {"run_dir", "runs_root", "resume", "num_workers", "prepare_workers", "progress",
                        "log_every_n_steps", "cudnn_benchmark",
                        "logger", "summary", "devices", "num_nodes", "accelerator", "strategy",
                        "wandb_group", "wandb_project"}


@dataclass(frozen=True)
class RunOutcome:
    """Where a finished run put its files, and its headline numbers."""

    run_dir: Path
    best_checkpoint: Path | None
    metrics: dict


def config_digest(options: dict) -> str:
    """Short hash of the options that define a run (default run folders are named by it)."""
    identity = {k: v for k, v in sorted(options.items()) if k not in NON_IDENTITY_OPTIONS}
    return hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]


def default_run_dir(options: dict) -> Path:
    return Path(options["runs_root"]).resolve() / f"{options['model']}-seed{options['seed']}-{config_digest(options)}"


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


def frontend_config(spec: ModelSpec, options: dict) -> MelConfig | None:
    """The model's default Mel settings with the user's overrides (None for waveform models)."""
    if spec.frontend is None:
        mel_options = ("n_fft", "hop_length", "n_mels", "f_min", "f_max")
        given = [name for name in mel_options if options.get(name) is not None]
        if given:
            raise ConfigError(f"{spec.name} reads raw waveforms; Mel options do not apply: "
                              + ", ".join("--" + g.replace("_", "-") for g in given))
        return None
    values = spec.frontend.to_dict()
    for key in ("n_fft", "hop_length", "n_mels", "f_min", "f_max"):
        if options.get(key) is not None:
            values[key] = options[key]
    if options.get("mel_compression"):
        values["compression"] = options["mel_compression"]
    if options.get("mel_backend"):
        values["backend"] = options["mel_backend"]
    return MelConfig.from_dict(values)


def build_datamodule(options: dict, spec: ModelSpec, layout: dict | None = None,
                     frontend: MelConfig | None = None) -> MTATDataModule:
    """The data module for these options; `layout` may be omitted before the clip length is known."""
    return MTATDataModule(
        data_dir=options["data"], cache_root=options["cache_dir"], vocabulary=options["tags"], n_tags=options["n_tags"],
        split=options["split"], layout=layout or {"segment_samples": 1, "segments_per_clip": 1},
        frontend=frontend.to_dict() if frontend is not None else None,
        batch_size=options["batch_size"] or spec.batch_size, eval_batch_size=options.get("eval_batch_size"),
        num_workers=options.get("num_workers"), seed=options["seed"],
        synthetic={"n_clips": options["synthetic_clips"], "clip_samples": options["synthetic_clip_samples"],
                   "seed": options["synthetic_seed"]},
        prepare_workers=options.get("prepare_workers"), progress=options.get("progress", True))


def _local_rank() -> int:
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 0


@contextlib.contextmanager
def _prepare_lock(cache_root: Path):
    """The lock that serialises data preparation (processes on other nodes of a shared file system wait too)."""
    lock = cache_root / ".prepare.lock"
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError as error:  # e.g. --cache-dir under a file, or in a read-only folder
        raise DataError(f"cache folder {cache_root} (--cache-dir) is not writable: "
                        f"{error.strerror or error}") from None
    with file_lock(lock):
        yield


def prepare_data_once(datamodule: MTATDataModule, timeout_s: float = 24 * 3600) -> DatasetInfo:
    """Do the data module's one-time work on one process per node; the others wait for it.

    This runs before the Trainer exists (the model's size depends on the data), so Lightning's own
    prepare_data barrier is not available yet: a lock file serialises processes that share a file
    system, and processes with a non-zero local rank wait until the cache can be opened.
    """
    if _local_rank() == 0:
        with _prepare_lock(datamodule.cache_root):
            datamodule.prepare_data()
    else:
        deadline = time.monotonic() + timeout_s
        while True:
            with _prepare_lock(datamodule.cache_root):
                try:
                    datamodule.dataset_info()
                    open_cache(datamodule.cache_dir)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
            time.sleep(5)
    return datamodule.dataset_info()


def resolve_run(options: dict) -> tuple[dict, MTATDataModule, TaggingModule, DatasetInfo]:
    """Prepare the data and build the data module and the model the options describe."""
    spec = model_spec(options["model"])
    frontend = frontend_config(spec, options)
    info = prepare_data_once(build_datamodule(options, spec, frontend=frontend))
    layout = segment_layout(spec, info.clip_samples, frontend, options.get("segments_per_clip"),
                            options.get("train_crop"))
    datamodule = build_datamodule(options, spec, layout.to_dict(), frontend)
    net_config = network_config(spec, input_shape(frontend, layout), len(info.tags), options)
    module = TaggingModule(
        network=build_network(net_config), network_config=net_config, tags=list(info.tags),
        frontend=frontend.to_dict() if frontend is not None else None, layout=layout.to_dict(),
        sample_rate=SAMPLE_RATE, optimizer=options["optimizer"], lr=options["lr"], momentum=options["momentum"],
        weight_decay=options["weight_decay"], nesterov=options["nesterov"], nonfinite_loss=options["nonfinite_loss"])
    processes = planned_processes(options)
    resolved = dict(options, resolved={
        "data_dir": str(info.data_dir), "clip_samples": info.clip_samples, "sample_rate": SAMPLE_RATE,
        "tags": list(info.tags), "layout": layout.to_dict(),
        "frontend": frontend.to_dict() if frontend is not None else None, "network": net_config,
        "batch_size": datamodule.hparams.batch_size, "processes": processes,
        "global_batch_size": datamodule.hparams.batch_size * processes, "versions": _versions()})
    return resolved, datamodule, module, info


def _versions() -> dict:
    import lightning
    import nnAudio
    import torchaudio
    import torchmetrics
    return {"torch": torch.__version__, "torchaudio": torchaudio.__version__, "lightning": lightning.__version__,
            "torchmetrics": torchmetrics.__version__, "nnAudio": getattr(nnAudio, "__version__", "unknown")}


def build_callbacks(options: dict, run_dir: Path) -> tuple[list[Callback], ModelCheckpoint]:
    checkpoint = ModelCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename="best-{epoch:03d}",
                                 monitor=options["monitor"], mode=options["monitor_mode"], save_top_k=1,
                                 save_last=True, auto_insert_metric_name=False)
    callbacks: list[Callback] = [checkpoint, RNGStateCheckpoint(), StepSeeds(options["seed"])]
    if options["local_decay"] > 0:
        callbacks.append(LocalDecay(decay=options["local_decay"], formula=options["local_decay_formula"]))
    if options["max_restarts"] >= 0 and options["patience"] > 0:
        callbacks.append(GlobalDecayRestart(
            monitor=options["monitor"], mode=options["monitor_mode"], patience=options["patience"],
            global_decay=options["global_decay"], max_restarts=options["max_restarts"],
            schedule=options["global_decay_schedule"]))
    callbacks.append(TrainingHistory(run_dir / HISTORY_FILE))  # after GlobalDecayRestart: sees its restarts
    return callbacks, checkpoint


STRATEGIES = ("auto", "ddp")
DEFAULT_LOG_EVERY_N_STEPS = 10  # run.py --log-every-n-steps
PRECISIONS = ("32", "bf16-mixed", "16-mixed")


class SyncModelBuffers(Callback):
    """Before every validation and test, copy global rank 0's model buffers to the other ranks.

    DDP here runs with `forward_sync_buffers=False`: buffers are broadcast once when DDP wraps the
    model, not before every training step. The model's buffers are BatchNorm running statistics
    (plus the small `thresholds` vector); the Mel frontend's kernels are no model buffers, they
    live in the data module. Each rank updates its running statistics from its own batches, so
    they drift apart during an epoch; they only matter in eval mode, so they are made identical
    here, once per evaluation, before any rank evaluates. Every rank then evaluates with rank 0's
    statistics, the ones rank 0's checkpoints save: validation metrics and the thresholds chosen
    on them are exactly what a single process evaluating that checkpoint gets.
    """

    @staticmethod
    def sync(trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size < 2 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        for buffer in pl_module.buffers():
            torch.distributed.broadcast(buffer, src=0)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sync(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sync(trainer, pl_module)


def resolved_accelerator(options: dict) -> str:
    """'gpu' or 'cpu' for the usual values of --accelerator ('auto': a GPU when CUDA sees one)."""
    name = str(options.get("accelerator") or "auto").lower()
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if name in ("gpu", "cuda") else name


def planned_processes(options: dict) -> int:
    """Training processes the options ask for: devices per node x nodes.

    `--devices auto` (or -1) means every GPU of the node, or one process on CPU.
    """
    devices = options.get("devices", "auto")
    if isinstance(devices, (list, tuple)):
        per_node = len(devices)
    elif devices in ("auto", -1, "-1"):
        per_node = torch.cuda.device_count() if resolved_accelerator(options) == "gpu" else 1
    else:
        per_node = int(devices)
    return max(1, per_node) * int(options.get("num_nodes") or 1)


def build_strategy(options: dict):
    """DDP when more than one process trains (or when asked for), else Lightning's single-device choice.

    DDP settings: no search for unused parameters (every parameter of these networks gets a
    gradient at every step, and the search costs a graph traversal per step) and no buffer
    broadcast before every forward (`SyncModelBuffers` aligns the BatchNorm statistics before
    each evaluation instead, which is all evaluation needs; training-mode BatchNorm uses batch
    statistics, so the running statistics never affect a training step).
    """
    name = options.get("strategy") or "auto"
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "auto" and planned_processes(options) == 1:
        return "auto"
    if options.get("sync_batchnorm") and resolved_accelerator(options) == "cpu":
        raise ConfigError("--sync-batchnorm needs GPUs: PyTorch's SyncBatchNorm does not run on CPU tensors")
    from lightning.pytorch.strategies import DDPStrategy
    return DDPStrategy(find_unused_parameters=False, **no_forward_buffer_sync())


def no_forward_buffer_sync() -> dict:
    """DDP's keyword for "no buffer broadcast before each forward": `forward_sync_buffers=False` from
    torch 2.13 (which deprecates `broadcast_buffers`), `broadcast_buffers=False` before (that one also
    skips the buffers' sync at wrapping time, harmless here: `SyncModelBuffers` aligns them before
    every evaluation, and seeded initialisation makes them equal at the start)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def cluster_plugins() -> list:
    """Under SLURM: Lightning's SLURM environment without its own requeue handler.

    Lightning would otherwise catch SIGUSR1, save a mid-epoch `hpc_ckpt_N.ckpt` and resume from
    it, which Lightning itself warns is unreliable for a dataloader that cannot resume mid-epoch.
    The batch scripts in slurm/ requeue the job from the batch shell instead; the requeued job
    runs the same command, finds the same (deterministic) run folder and resumes exactly from
    its last end-of-epoch checkpoint, like `--resume`.
    """
    from lightning.pytorch.plugins.environments import SLURMEnvironment
    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def check_precision(options: dict) -> str:
    precision = str(options.get("precision") or "32")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "16-mixed" and resolved_accelerator(options) == "cpu":
        raise ConfigError("--precision 16-mixed needs a GPU (PyTorch has no float16 autocast for CPU training); "
                          "use bf16-mixed on CPU")
    return precision


def check_run_options(options: dict) -> None:
    """Raise ConfigError for precision and distributed settings that cannot work here."""
    check_precision(options)
    build_strategy(options)


def build_trainer(options: dict, run_dir: Path, callbacks: list[Callback], logger) -> pl.Trainer:
    if options.get("deterministic"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    log_every = int(options.get("log_every_n_steps") or DEFAULT_LOG_EVERY_N_STEPS)
    callbacks = [*callbacks, SyncModelBuffers()]
    if options.get("progress", True):
        # Refreshing the bar reads the logged loss, a host sync: as often as the logger, not every step.
        callbacks.append(TQDMProgressBar(refresh_rate=log_every))
    return pl.Trainer(
        default_root_dir=run_dir, max_epochs=options["max_epochs"], accelerator=options["accelerator"],
        devices=options["devices"], num_nodes=options["num_nodes"], strategy=build_strategy(options),
        plugins=cluster_plugins(), precision=check_precision(options), sync_batchnorm=options["sync_batchnorm"],
        deterministic=options.get("deterministic", False), callbacks=callbacks, logger=logger,
        benchmark=bool(options.get("cudnn_benchmark", True)) and not options.get("deterministic", False),
        use_distributed_sampler=False,  # MTATDataModule shards by rank itself (exact evaluation)
        limit_train_batches=options.get("limit_train_batches"), limit_val_batches=options.get("limit_val_batches"),
        limit_test_batches=options.get("limit_test_batches"), num_sanity_val_steps=options.get("sanity_steps", 2),
        enable_progress_bar=options.get("progress", True),
        log_every_n_steps=log_every)


def run_experiment(options: dict, extra_callbacks: tuple[Callback, ...] = ()) -> RunOutcome:
    """Train, keep the best checkpoint, test it, and write the run folder's result files.

    `extra_callbacks` join the run's own (a sweep adds its pruning callback here).
    """
    check_run_options(options)  # before the data are prepared: a bad option fails at once
    pl.seed_everything(options["seed"], workers=True, verbose=False)
    resolved, datamodule, module, info = resolve_run(options)
    run_dir = Path(options["run_dir"]).resolve() if options.get("run_dir") else default_run_dir(options)
    last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    resume_from = last if last.is_file() else None
    if (run_dir / "metrics.json").is_file():
        # Rerunning the command of a finished run (a requeued job, a sweep retry) changes nothing.
        _check_same_run(run_dir, resolved)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        print(f"{run_dir} already holds this finished run; pass another --run-dir to train again")
        best = Path(metrics["best_checkpoint"]) if metrics.get("best_checkpoint") else None
        return RunOutcome(run_dir, best, metrics)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume_from is not None:
        _warn_if_scale_changed(run_dir, _check_same_run(run_dir, resolved), resolved)
        say_if_resume_inexact(options, run_dir)
    if _is_global_zero():
        write_json_atomic(run_dir / CONFIG_FILE, resolved)
        write_text_atomic(run_dir / "tags.txt", "\n".join(info.tags) + "\n")
    if options.get("compile"):
        module.network.compile()  # in place: state_dict keys stay those of the plain network
    callbacks, checkpoint = build_callbacks(options, run_dir)
    capture = TestPredictionsCapture()
    callbacks += [capture, *extra_callbacks]
    logger = build_logger(options, run_dir, config=resolved)
    failed = True
    try:
        trainer = build_trainer(options, run_dir, callbacks, logger)
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
        best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
        trainer.test(module, datamodule=datamodule, ckpt_path=str(best) if best else None, verbose=False)
        metrics = {}
        if trainer.is_global_zero:
            metrics = write_results(run_dir, resolved, module.last_test_report, module.thresholds.cpu(),
                                    best_checkpoint=best, best_val=_best_val(checkpoint), epochs=trainer.current_epoch)
            _figures_and_tables(run_dir, module, datamodule, capture, logger, metrics)
        failed = False
    finally:
        finish_logger(logger, failed=failed)
    close_process_group()
    return RunOutcome(run_dir, best, metrics)


def close_process_group() -> None:
    """Under DDP, wait for every rank, then leave the process group (a no-op in one process).

    A rank that exits while another still holds its gloo connections can abort at exit
    ("terminate called without an active exception", SIGABRT: seen in about one 2-process CPU run
    in ten), which fails a SLURM task whose work is done. Leaving together avoids it; Lightning's
    own exit handler then finds no group to destroy.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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


def evaluate_checkpoint(options: dict, checkpoint: Path, run_dir: Path) -> RunOutcome:
    """`--evaluate`: test a checkpoint without training; write config.json and the result files into `run_dir`.

    The network, tag list, Mel settings, segment layout and per-tag thresholds come from the
    checkpoint; `options` say which data to test on (their vocabulary must give the checkpoint's
    tags) and how to run (devices, precision, batch size).
    """
    check_run_options(options)
    pl.seed_everything(options["seed"], workers=True, verbose=False)
    module = TaggingModule.from_checkpoint(checkpoint)
    hparams = module.hparams
    name = hparams.network_config.get("name")
    if options.get("model") and options["model"] != name:
        raise ConfigError(f"--model {options['model']} does not match the checkpoint's network ({name})")
    options = dict(options, model=name)
    spec = model_spec(name)
    frontend = MelConfig.from_dict(hparams.frontend) if hparams.frontend is not None else None
    datamodule = build_datamodule(options, spec, dict(hparams.layout), frontend)
    info = prepare_data_once(datamodule)
    if tuple(info.tags) != tuple(hparams.tags):
        raise ConfigError(f"{checkpoint} was trained on {len(hparams.tags)} tags ({', '.join(hparams.tags[:5])}, ...), "
                          f"the data give {len(info.tags)} ({', '.join(info.tags[:5])}, ...): use the training run's "
                          "--data, --tags and --n-tags")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    resolved = dict(options, evaluated_checkpoint=str(checkpoint), resolved={
        "data_dir": str(info.data_dir), "clip_samples": info.clip_samples, "sample_rate": hparams.sample_rate,
        "tags": list(info.tags), "layout": dict(hparams.layout), "frontend": hparams.frontend,
        "network": hparams.network_config, "batch_size": datamodule.hparams.batch_size, "versions": _versions()})
    run_dir.mkdir(parents=True, exist_ok=True)
    if _is_global_zero():
        write_json_atomic(run_dir / CONFIG_FILE, resolved)
        write_text_atomic(run_dir / "tags.txt", "\n".join(info.tags) + "\n")
    trainer = build_trainer(options, run_dir, [], logger=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {}
    if trainer.is_global_zero:
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


def _figures_and_tables(run_dir: Path, module: TaggingModule, datamodule: MTATDataModule,
                        capture: TestPredictionsCapture, logger, metrics: dict) -> None:
    """The run's figures (PNG in RUN_DIR/figures) and, for W&B, the per-tag table, figures and summary."""
    figures = {}
    try:
        figures = figures_for_run(run_dir, module, datamodule, capture, run_dir / HISTORY_FILE,
                                  report=module.last_test_report)
    except Exception as error:  # a plotting problem must not cost the finished run its logging
        print(f"warning: figures not written ({type(error).__name__}: {error})", file=sys.stderr)
    summary = {f"best_validation/{k}": v for k, v in metrics.get("best_validation", {}).items()}
    log_run_results(logger, module.last_test_report, figures, summary)


def _best_val(checkpoint: ModelCheckpoint) -> dict:
    score = checkpoint.best_model_score
    return {"monitor": checkpoint.monitor, "best": float(score) if score is not None else None}


def _is_global_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0))) == 0 and _local_rank() == 0


def _check_same_run(run_dir: Path, resolved: dict) -> dict:
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


def _warn_if_scale_changed(run_dir: Path, saved_config: dict, resolved: dict) -> None:
    """Resuming on another number of processes is allowed (a job requeued on fewer GPUs), but the
    global batch, and with it the gradient noise and the steps per epoch, changes: say so."""
    saved = saved_config.get("resolved", {})
    before, now = saved.get("processes"), resolved["resolved"]["processes"]
    if before is not None and before != now and _is_global_zero():
        print(f"warning: {run_dir} trained with {before} process(es) (global batch {saved.get('global_batch_size')}); "
              f"it resumes with {now} (global batch {resolved['resolved']['global_batch_size']}): the steps per "
              "epoch and the effective batch change from here on", file=sys.stderr)


def describe_network(options: dict) -> str:
    """`--summary`: the network for MTAT's clip length, layer by layer, with both parameter counts."""
    from datamodules.audio import MTAT_CLIP_SAMPLES
    from lightning_modules.summary import format_summary, layer_summary

    spec = model_spec(options["model"])
    frontend = frontend_config(spec, options)
    layout = segment_layout(spec, MTAT_CLIP_SAMPLES, frontend, options.get("segments_per_clip"),
                            options.get("train_crop"))
    shape = input_shape(frontend, layout)
    network = build_network(network_config(spec, shape, options["n_tags"], options))
    segments = f"{layout.segments_per_clip} segment(s) of {layout.segment_samples} samples per clip"
    mel = f"; Mel n_fft {frontend.n_fft}, hop {frontend.hop_length}, {frontend.n_mels} bands" if frontend else ""
    title = f"{spec.name} ({spec.table}): input {shape}, {segments}{mel}"
    return format_summary(layer_summary(network, shape), title)
