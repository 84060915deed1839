"""The learning-rate schedules of the recipes that are not the paper's (`--schedule won2020|cosine`).

* :class:`Won2020Stages`: Won et al. 2020's schedule (minzwon/sota-music-tagging-models,
  `training/solver.py`, `opt_schedule`): the run starts with the module's own optimiser (Adam,
  1e-4, weight decay 1e-4); after a fixed number of epochs it reloads the best weights so far
  (lowest validation loss, their model selection) and continues with SGD + Nesterov (momentum
  0.9, the same weight decay) at the first stage rate; each later stage reloads the best weights
  again and lowers the rate, keeping SGD's momentum buffers as their code does (it only rewrites
  the param groups' `lr`). Their counts: 80 epochs of Adam, then 20 at 1e-3, 20 at 1e-4, and
  1e-5 until the end (200 epochs in their main.py).
* :class:`WarmupCosine`: linear warm-up then cosine decay to zero, a pure function of the global
  step, so a resumed run sets exactly the rates an uninterrupted one does (Lightning restores
  `global_step` from the checkpoint) and no scheduler state needs saving.

`Won2020Stages` tracks and reloads the best weights with `GlobalDecayRestart`'s machinery (it is
a subclass that never restarts on a plateau), so both keep the best weights the same way, in
the checkpoint, and resume the same way.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from callbacks.lr_decay import GlobalDecayRestart, _warn_setting_mismatch
from callbacks.progress_bar import tell
from infrastructure.errors import ConfigError


class Won2020Stages(GlobalDecayRestart):
    """Optimiser stages switched at fixed epochs, each switch reloading the best weights.

    Args:
        stage_epochs: epochs of each stage before the next switch: the first is the module's
            own optimiser's (Adam), the others SGD stages'; the last stage runs to the end.
            Won et al.: (80, 20, 20).
        stage_lrs: SGD rate of the stage after each switch (as many as `stage_epochs`).
            Won et al.: (1e-3, 1e-4, 1e-5).
        momentum, weight_decay, nesterov: the SGD stages' settings (theirs: 0.9, 1e-4, True).
        monitor, mode: model selection (theirs: validation loss, lower is better).

    The stage is part of the callback's state (in every checkpoint), and `optimizer_for` builds
    the optimiser of the current stage: `TaggingModule.configure_optimizers` asks it, so a run
    resumed in an SGD stage restores SGD's saved state into an SGD optimiser.
    """

    def __init__(self, stage_epochs=(80, 20, 20), stage_lrs=(1e-3, 1e-4, 1e-5), momentum: float = 0.9,
                 weight_decay: float = 1e-4, nesterov: bool = True, monitor: str = "val/loss", mode: str = "min",
                 verbose: bool = True) -> None:
        # patience 1 / no restarts: the parent only tracks the best score and weights here (next_action below
        # never returns "restart" or "stop").
        super().__init__(monitor=monitor, mode=mode, patience=1, global_decay=1.0, max_restarts=0, verbose=verbose)
        self.stage_epochs = [int(e) for e in stage_epochs]
        self.stage_lrs = [float(r) for r in stage_lrs]
        check_stages(self.stage_epochs, self.stage_lrs)
        self.sgd = {"momentum": float(momentum), "weight_decay": float(weight_decay), "nesterov": bool(nesterov)}
        self.stage = 0
        """Switches done so far (0: the module's own optimiser)."""

    def switch_epochs(self) -> list[int]:
        """The epochs (0-based `current_epoch`) after whose validation each switch happens."""
        return [sum(self.stage_epochs[:i + 1]) - 1 for i in range(len(self.stage_epochs))]

    def next_action(self, score: float) -> str:
        return "improve" if self._improves(float(score)) else "wait"

    def optimizer_for(self, module: pl.LightningModule, default):
        """The optimiser of the current stage: `default()` (the module's own) before the first switch."""
        if self.stage == 0:
            return default()
        return torch.optim.SGD(module.parameters(), lr=self.stage_lrs[self.stage - 1], **self.sgd)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass  # the parent's global-rate bookkeeping belongs to the paper's decay

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)  # best score and weights (broadcast from rank 0)
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        epoch = trainer.current_epoch
        switches = self.switch_epochs()
        if self.stage < len(switches) and epoch == switches[self.stage]:
            self._switch(trainer, pl_module, epoch)

    def _switch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        self._restore_best(trainer, pl_module)
        rate = self.stage_lrs[self.stage]
        if self.stage == 0:  # Adam -> SGD: a new optimiser (their code builds one)
            self.stage = 1
            trainer.strategy.optimizers = [self.optimizer_for(pl_module, None)]
        else:  # a lower SGD rate: same optimiser, momentum kept (their code rewrites the groups' lr only)
            self.stage += 1
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = rate
        self._say(trainer, f"epoch {epoch}: stage {self.stage}: reloaded the weights of epoch {self.best_epoch} "
                           f"({self.monitor}={self.best_score:.6g}); SGD (Nesterov) at lr {rate:g}")

    def _say(self, trainer: pl.Trainer, message: str) -> None:
        if self.verbose and trainer.is_global_zero:
            tell(f"Won2020Stages: {message}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("train/stage", float(self.stage), on_step=False, on_epoch=True, batch_size=1, sync_dist=True)

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "stage_epochs": list(self.stage_epochs), "stage_lrs": list(self.stage_lrs),
                **self.sgd}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stage": self.stage}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.stage = int(state_dict["stage"])


def check_stages(stage_epochs, stage_lrs) -> None:
    """ConfigError unless the stage lists are usable (one rate per switch, positive epochs and rates)."""
    if not stage_epochs or len(stage_epochs) != len(stage_lrs):
        raise ConfigError(f"--stage-epochs ({len(stage_epochs)} values) and --stage-lrs ({len(stage_lrs)}) need one "
                          "value each per stage switch")
    if min(stage_epochs) < 1 or min(stage_lrs) <= 0:
        raise ConfigError("--stage-epochs must be positive integers and --stage-lrs positive rates")


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Factor of the peak rate at optimizer step `step` (0-based): linear from 1/warmup to 1 over the first
    `warmup_steps` steps, then a half cosine from 1 to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(Callback):
    """Linear warm-up over `warmup` (a fraction of all training steps), then cosine decay to zero.

    The rate of every param group is set before each training batch from the group's peak rate
    (`initial_lr`, recorded when fit starts and saved with the optimizer) and the global step;
    the total is `trainer.estimated_stepping_batches` (max epochs x batches per epoch).
    `callbacks.history.TrainingHistory` logs the rate in use (`train/lr`).
    """

    def __init__(self, warmup: float = 0.05) -> None:
        super().__init__()
        if not 0.0 <= float(warmup) < 1.0:
            raise ConfigError(f"--warmup must be a fraction of the training steps in [0, 1), got {warmup}")
        self.warmup = float(warmup)

    def steps(self, trainer: pl.Trainer) -> tuple[int, int]:
        total = int(trainer.estimated_stepping_batches)
        return total, int(round(self.warmup * total))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for group in trainer.optimizers[0].param_groups:
            group.setdefault("initial_lr", float(group["lr"]))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        total, warmup = self.steps(trainer)
        factor = warmup_cosine_factor(trainer.global_step, total, warmup)
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = group["initial_lr"] * factor

    def state_dict(self) -> dict[str, Any]:
        return {"warmup": self.warmup}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _warn_setting_mismatch("WarmupCosine", state_dict, {"warmup": self.warmup})
