"""Rank 0's model buffers copied to every rank before each evaluation (exact DDP evaluation)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback


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
