"""Random numbers of every training step as a function of (seed, epoch, batch, rank).

Why: a resumed run must draw exactly the dropout masks the uninterrupted run draws. Restoring
the generators' states from the checkpoint (`RNGStateCheckpoint`) is not enough, because what
happens between the checkpoint and the next training step is not the same in the two runs:

* each time a DataLoader iterator is created, torch draws its `_base_seed` from the global torch
  generator (unless the loader has its own `generator`). With persistent workers (the default
  whenever there are loader workers) the uninterrupted run creates the training iterator once,
  in epoch 0, and reuses it; the resumed process creates it again when `fit` starts, after the
  states were restored, so every later dropout mask was shifted by one draw (the suite's
  loaders now have their own generators, `datamodules.sampling.loader_generator`);
* the same holds for the validation iterator when there is no sanity check (it is created in
  epoch 0's validation in one run, in the resumed epoch's validation in the other), and for
  anything else that consumes the global streams outside the training steps (a logger, a
  callback, a future library version).

So instead of depending on how much randomness was consumed before, `StepSeeds` reseeds torch's
CPU and CUDA generators, numpy's global generator and python's `random` at the start of every
training batch from (seed, epoch, batch index, global rank). Each step's randomness then
follows from where the step is, whichever process runs it and whatever ran before. The rank is
part of the key so DDP ranks draw independent dropout masks rather than equal ones.

The cost is a few microseconds per step (a `SeedSequence` and three host-side seed calls; on a
GPU `manual_seed` sets the generator's seed and offset, with no device synchronisation).

Evaluation draws no random numbers (eval mode: no dropout), and the data's order and crops are
drawn from (seed, epoch, item) by `datamodules.sampling.EpochSampler` and `SegmentDataset`, so
together with this callback no random stream of training depends on consumption order.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def step_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """A 63-bit seed for training step (epoch, batch) on global rank `rank` of a run seeded `seed`.

    Different keys give statistically independent seeds (numpy's SeedSequence hashing), so
    neighbouring steps, epochs, ranks and run seeds do not get related streams.
    """
    state = np.random.SeedSequence([int(seed) % (1 << 64), int(epoch), int(batch), int(rank)]).generate_state(
        2, dtype=np.uint32)
    return ((int(state[0]) << 32) | int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


def seed_step(seed: int, epoch: int, batch: int, rank: int = 0) -> None:
    """Reseed torch (CPU and every CUDA device), numpy's global generator and python's `random`."""
    value = step_seed(seed, epoch, batch, rank)
    torch.manual_seed(value)  # also every CUDA device's default generator
    np.random.seed(value & 0xFFFFFFFF)
    random.seed(value)


class StepSeeds(Callback):
    """Reseeds the global generators at the start of every training batch (see the module docstring).

    Args:
        seed: the run's seed (`--seed`).
    """

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        seed_step(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
