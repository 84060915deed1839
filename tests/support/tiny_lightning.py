"""A tiny self-contained LightningModule and the trainer, loader and recorder that the callback tests drive it with.

Linear layers on fixed random tensors, SGD with momentum 0.9, on the CPU: fast enough to run many short fits that
show exactly what a callback did to the rates, the weights and the optimizer state.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from callbacks.lr_decay import GLOBAL_LR_KEY

N_SAMPLES = 20


BATCH = 4  # -> 5 training batches per epoch


class TinyModule(pl.LightningModule):
    """Two linear layers (optionally with dropout) on random tensors.

    ``lrs`` gives one param group per layer with that rate (one group at ``lrs[0]`` if a single
    rate is given). ``val_losses`` scripts the logged ``val/loss`` by epoch; without it the real
    validation loss is logged. ``rank_offset`` adds ``rank * rank_offset`` to the scripted value
    (to give DDP ranks different, unsynced metrics).
    """

    def __init__(self, lrs=(0.01,), val_losses=None, dropout=0.0, rank_offset=0.0):
        super().__init__()
        self.first = torch.nn.Linear(3, 6)
        self.drop = torch.nn.Dropout(dropout)
        self.second = torch.nn.Linear(6, 1)
        self.lrs = tuple(lrs)
        self.val_losses = None if val_losses is None else list(val_losses)
        self.rank_offset = rank_offset
        self._val_sum = 0.0
        self._val_n = 0

    def forward(self, x):
        return self.second(self.drop(torch.relu(self.first(x))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self._val_sum += float(loss)
        self._val_n += 1

    def on_validation_epoch_end(self):
        if self.val_losses is None:
            value = self._val_sum / max(self._val_n, 1)
        else:
            value = self.val_losses[self.current_epoch] + self.global_rank * self.rank_offset
        self._val_sum, self._val_n = 0.0, 0
        self.log("val/loss", float(value))

    def configure_optimizers(self):
        if len(self.lrs) == 1:
            return torch.optim.SGD(self.parameters(), lr=self.lrs[0], momentum=0.9)
        groups = [
            {"params": self.first.parameters(), "lr": self.lrs[0]},
            {"params": self.second.parameters(), "lr": self.lrs[1]},
        ]
        return torch.optim.SGD(groups, lr=self.lrs[0], momentum=0.9)


def make_loader(shuffle=False, n=N_SAMPLES):
    """Fixed random regression data (independent of the global RNG)."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 3, generator=g)
    y = torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=shuffle)


class Recorder(Callback):
    """Records what happened: the rates each optimizer step used, and per validation the
    weights/optimizer state before (``on_validation_start``) and after (``on_validation_end``,
    list this recorder after the callback under test) the decision."""

    def __init__(self):
        self.step_lrs: list[tuple[int, list[float]]] = []  # (epoch, rate of every group)
        self.pre: dict[int, dict] = {}
        self.post: dict[int, dict] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.step_lrs.append((trainer.current_epoch, [g["lr"] for g in optimizer.param_groups]))

    @staticmethod
    def _snapshot(trainer, pl_module):
        opt = trainer.optimizers[0]
        return {
            "weights": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
            "opt_state_len": len(opt.state),
            "lr": [g["lr"] for g in opt.param_groups],
            "global_lr": [g.get(GLOBAL_LR_KEY) for g in opt.param_groups],
        }

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.pre[trainer.current_epoch] = self._snapshot(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.post[trainer.current_epoch] = self._snapshot(trainer, pl_module)


def make_trainer(callbacks, max_epochs, **kwargs):
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        **kwargs,
    )


def weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
