"""The Trainer of a run: devices, DDP strategy, precision, cluster environment, and leaving DDP cleanly."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from callbacks.progress_bar import TaggingProgressBar, tell
from callbacks.sync_buffers import SyncModelBuffers
from experiments.options import DEFAULT_LOG_EVERY_N_STEPS
from experiments.peers import ddp_timeout
from experiments.resolve import ResolvedRun, uses_ddp

SANITY_VAL_STEPS = 2  # validation batches run before training starts (catches evaluation bugs at once)


def build_strategy(run: ResolvedRun):
    """DDP when more than one process trains (or when asked for), else Lightning's single-device choice.

    DDP settings: no search for unused parameters (every parameter of these networks gets a
    gradient at every step, and the search costs a graph traversal per step) and no buffer
    broadcast before every forward (`SyncModelBuffers` aligns the BatchNorm statistics before
    each evaluation instead, which is all evaluation needs; training-mode BatchNorm uses batch
    statistics, so the running statistics never affect a training step).
    """
    if not uses_ddp(run.options):
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy
    return DDPStrategy(find_unused_parameters=False, timeout=ddp_timeout(run.options), **no_forward_buffer_sync())


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


LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
# Lightning warnings that tell a user of this suite nothing to act on, as (message start, module it is attributed to).
UNACTIONABLE_WARNINGS = (
    # the suite logs per epoch too; a short (or --limit-train-batches) epoch is no problem
    (r"The number of training batches \(\d+\) is smaller than the logging interval", r"lightning\.pytorch"),
    # --num-workers is the suite's choice (its default is sized to the machine); the hint names Lightning's argument
    (r"The '\w+' does not have many workers", r"lightning\.pytorch"),
    # a resumed run's own checkpoints (the suite resumes when RUN_DIR/checkpoints/last.ckpt exists, saved with the best)
    (r"Checkpoint directory .* exists and is not empty", r"lightning\.pytorch"),
    # Lightning's own use of a torch API that torch deprecates: nothing for the user to change
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch"),
)
SRUN_WARNING = r"The `srun` command is available on your system but is not used"


def quiet_lightning() -> None:
    """Silence Lightning's chatter at its source, keeping the warnings that mean something is wrong.

    Lightning prints info lines through its `lightning.pytorch` / `lightning.fabric` loggers at INFO
    (`rank_zero_info`: "GPU available: ...", "TPU available: ...", its "💡 Tip: ..." advertisements,
    "`Trainer.fit` stopped: ...", "Restoring states from the checkpoint ..."): those loggers are
    set to WARNING. Its warnings go through the `warnings` module: the few listed in
    `UNACTIONABLE_WARNINGS` are ignored, every other one (ours included) is still shown. The warning
    that `srun` exists but is not used is ignored outside a SLURM job only: inside an allocation it
    flags a real mistake (a multi-process run started without srun hangs), elsewhere it fires on every
    machine that merely has SLURM's client installed. The per-run model table is off in the Trainer
    (`enable_model_summary=False`; `--summary` prints the network). Safe to call more than once.
    """
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message, module in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    if not os.environ.get("SLURM_JOB_ID"):
        warnings.filterwarnings("ignore", message=SRUN_WARNING)


class DistributedNote(Callback):
    """One line, from the first process, when training starts in several: how many, on how many nodes. (Lightning's
    own lines about it are silenced with its other info lines; on a cluster this one says the world formed.)"""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1 and trainer.is_global_zero:
            import torch.distributed as dist

            backend = dist.get_backend() if dist.is_initialized() else "?"
            environment = type(getattr(trainer.strategy, "cluster_environment", None)).__name__
            tell(f"distributed: training in {trainer.world_size} processes on {trainer.num_nodes} node(s) "
                 f"({backend}; ranks from {environment})")


def build_trainer(run: ResolvedRun, run_dir: Path, callbacks: list[Callback], logger) -> pl.Trainer:
    quiet_lightning()
    options = run.options
    if options.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    log_every = int(options.log_every_n_steps or DEFAULT_LOG_EVERY_N_STEPS)
    callbacks = [*callbacks, SyncModelBuffers(), DistributedNote()]
    if options.progress:
        # Refreshing the bar reads the logged loss, a host sync: as often as the logger, not every step.
        callbacks.append(TaggingProgressBar(refresh_rate=log_every))
    return pl.Trainer(
        default_root_dir=run_dir, max_epochs=options.max_epochs, accelerator=options.accelerator,
        devices=options.devices, num_nodes=options.num_nodes, strategy=build_strategy(run),
        plugins=cluster_plugins(), precision=run.precision, sync_batchnorm=options.sync_batchnorm,
        deterministic=options.deterministic, callbacks=callbacks, logger=logger,
        benchmark=bool(options.cudnn_benchmark) and not options.deterministic,
        use_distributed_sampler=False,  # MTATDataModule shards by rank itself (exact evaluation)
        limit_train_batches=options.limit_train_batches, limit_val_batches=options.limit_val_batches,
        limit_test_batches=options.limit_test_batches, num_sanity_val_steps=SANITY_VAL_STEPS,
        enable_progress_bar=options.progress, enable_model_summary=False, gradient_clip_val=options.gradient_clip or None,
        log_every_n_steps=log_every)

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

