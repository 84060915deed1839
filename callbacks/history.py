"""Per-epoch training history: losses, validation AUCs, learning rates and global-decay restarts.

:class:`TrainingHistory` keeps one row per training epoch and rewrites ``history.csv`` (on global
rank zero) after every epoch. The rows are its checkpoint state, so a resumed run keeps the
epochs before the interruption. The paper's Figure 2 (loss per epoch with restart markers) is
drawn from this file (`experiments.reporting.figures.loss_history_figure`).

Columns:

* ``epoch``, ``global_step`` (after the epoch's last step);
* ``train_loss``: mean training loss of the epoch, weighted by batch size (as the module's
  ``train/loss_epoch``); empty when every batch was skipped;
* ``val_loss``, ``val_roc_auc``, ``val_pr_auc``: from the epoch's validation (empty without one);
* ``lr_start`` / ``lr_end``: learning rate of the epoch's first and last optimizer step (first
  param group);
* ``restarts``: global-decay restarts so far; ``restart``: 1 when this epoch's validation
  triggered one (training goes on from the best weights at a lower rate); ``stopped``: 1 when
  it ended training.

Restarts come from a :class:`callbacks.GlobalDecayRestart` in the trainer's callbacks; it must
come *before* this callback in the list (both act at validation end; `build_callbacks` orders
them so). Each restart is also logged to the trainer's loggers as ``events/restart`` (the restart
number), ``events/restart_epoch`` and ``events/restart_lr`` at that global step.

When no :class:`callbacks.LocalDecay` logs the rate, this callback logs ``train/lr`` every step.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from callbacks.lr_decay import GlobalDecayRestart, LocalDecay, host_scalar
from infrastructure.io import write_text_atomic

HISTORY_FILE = "history.csv"
COLUMNS = ("epoch", "global_step", "train_loss", "val_loss", "val_roc_auc", "val_pr_auc", "lr_start", "lr_end",
           "restarts", "restart", "stopped")


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().float().item()
    value = float(value)
    return None if math.isnan(value) else value


def history_csv(rows: list[dict]) -> str:
    """The rows as CSV text (empty cells for missing values)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        cells = []
        for name in COLUMNS:
            value = row.get(name)
            if value is None:
                cells.append("")
            elif isinstance(value, bool):
                cells.append(int(value))
            elif isinstance(value, float):
                cells.append(repr(value))
            else:
                cells.append(value)
        writer.writerow(cells)
    return out.getvalue()


def read_history(path: str | Path) -> list[dict]:
    """Rows of a ``history.csv``: numbers as float/int, empty cells as None."""
    integer = {"epoch", "global_step", "restarts", "restart", "stopped"}
    rows = []
    with open(path, newline="") as stream:
        for raw in csv.DictReader(stream):
            row = {}
            for name in COLUMNS:
                text = raw.get(name, "")
                row[name] = None if text in ("", None) else (int(text) if name in integer else float(text))
            rows.append(row)
    return rows


class TrainingHistory(Callback):
    """Records one row per training epoch and writes them to ``path`` (see the module docstring).

    Args:
        path: the CSV file to (re)write after every epoch, or None to keep the rows in memory only.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        self.path = Path(path) if path is not None else None
        self.rows: list[dict] = []
        self._loss_sum = 0.0
        self._loss_count = 0
        self._lr_start: float | None = None
        self._lr_last: float | None = None
        self._log_lr = False
        self._restarts_at_start = 0

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _restart_callback(trainer: pl.Trainer) -> GlobalDecayRestart | None:
        found = [cb for cb in trainer.callbacks if isinstance(cb, GlobalDecayRestart)]
        return found[0] if found else None

    @staticmethod
    def _lr(trainer: pl.Trainer) -> float | None:
        return float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None

    def _row(self, epoch: int) -> dict:
        for row in self.rows:
            if row["epoch"] == epoch:
                return row
        row = {name: None for name in COLUMNS}
        row.update(epoch=epoch, restart=False, stopped=False)
        self.rows.append(row)
        return row

    def _restarts_before(self, epoch: int, at_fit_start: int) -> int:
        earlier = [row["restarts"] for row in self.rows if row["epoch"] < epoch and row["restarts"] is not None]
        return earlier[-1] if earlier else at_fit_start

    def _write(self, trainer: pl.Trainer) -> None:
        if self.path is None or not trainer.is_global_zero:
            return
        write_text_atomic(self.path, history_csv(self.rows))

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        callbacks = list(trainer.callbacks)
        restart = self._restart_callback(trainer)
        if restart is not None and callbacks.index(restart) > callbacks.index(self):
            warnings.warn("TrainingHistory comes before GlobalDecayRestart in the callbacks: restarts will be "
                          "recorded one epoch late; put TrainingHistory after it", stacklevel=2)
        self._restarts_at_start = restart.restarts if restart is not None else 0
        self._log_lr = not any(isinstance(cb, LocalDecay) for cb in callbacks)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._loss_sum, self._loss_count = 0.0, 0
        self._lr_start = None
        self._lr_last = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        lr = self._lr(trainer)
        if self._lr_start is None:
            self._lr_start = lr
        self._lr_last = lr

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            # Summed on the loss's device (no host sync per step); read once, at the epoch's end.
            size = len(batch["target"]) if isinstance(batch, dict) and "target" in batch else 1
            loss = loss.detach().float()
            finite = torch.isfinite(loss)
            self._loss_sum = self._loss_sum + torch.where(finite, loss * size, torch.zeros_like(loss))
            self._loss_count = self._loss_count + finite.to(torch.float32) * size
        if self._log_lr and self._lr_last is not None:
            pl_module.log("train/lr", host_scalar(self._lr_last), on_step=True, on_epoch=False, batch_size=1)

    def _record_training(self, trainer: pl.Trainer, row: dict) -> None:
        row["global_step"] = int(trainer.global_step)
        count = float(self._loss_count)
        if count:
            row["train_loss"] = float(self._loss_sum) / count
        row["lr_start"], row["lr_end"] = self._lr_start, self._lr_last

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        epoch = trainer.current_epoch
        row = self._row(epoch)
        self._record_training(trainer, row)
        metrics = trainer.callback_metrics
        for column, key in (("val_loss", "val/loss"), ("val_roc_auc", "val/roc_auc"), ("val_pr_auc", "val/pr_auc")):
            if key in metrics:
                row[column] = _number(metrics[key])
        restart = self._restart_callback(trainer)
        before = self._restarts_before(epoch, self._restarts_at_start)
        if restart is not None:
            row["restarts"] = restart.restarts
            row["restart"] = restart.restarts > before
            row["stopped"] = bool(restart.stopped)
            if row["restart"]:
                lr = self._lr(trainer)
                _log_events(trainer, {"events/restart": float(restart.restarts), "events/restart_epoch": float(epoch),
                                     "events/restart_lr": float(lr) if lr is not None else math.nan})
        else:
            row["restarts"] = before
        # written here too: the checkpoint of this validation (saved right after) holds these rows
        self._write(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = self._row(trainer.current_epoch)
        self._record_training(trainer, row)
        if row["restarts"] is None:
            row["restarts"] = self._restarts_before(trainer.current_epoch, self._restarts_at_start)
        self._write(trainer)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict.get("rows", [])]


def _log_events(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
    """Log event values (a restart) to every logger of `trainer` at the current global step."""
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=trainer.global_step)
