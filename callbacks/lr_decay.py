"""The paper's two-level learning-rate decay (section 4.5) as two Lightning callbacks.

* :class:`LocalDecay` lowers the rate after every training batch and resets it at the start of
  every epoch (formula 1).
* :class:`GlobalDecayRestart` watches a validation metric; when it stops improving it restores
  the best weights seen so far, clears the optimizer state and lowers the rate (formula 2), and
  after the last allowed restart it restores the best weights and stops training.

The two callbacks never call each other. They communicate only through the param groups of
``trainer.optimizers[0]`` (which Lightning saves with the optimizer in every checkpoint):

* ``group[GLOBAL_LR_KEY]`` (``"global_lr"``): the rate every epoch starts from. Only
  :class:`GlobalDecayRestart` changes it.
* ``group["lr"]``: the rate in use. :class:`LocalDecay` rewrites it after every batch and at
  every epoch start; :class:`GlobalDecayRestart` sets it on a restart.

Either callback sets ``global_lr`` from the group's ``lr`` at fit start when it is absent, so each
one also works alone. Every param group is scaled from its own rate. Other learning-rate
schedulers on the same optimizer would fight with these callbacks: use one or the other.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from callbacks.progress_bar import tell
from callbacks.schedule_names import GLOBAL_DECAY_SCHEDULES, LOCAL_DECAY_FORMULAS
from infrastructure.errors import ConfigError

GLOBAL_LR_KEY = "global_lr"
"""Param-group key holding the rate each epoch starts from (shared by both callbacks)."""


def _first_optimizer(trainer: pl.Trainer, owner: str) -> torch.optim.Optimizer:
    """Return ``trainer.optimizers[0]``; raise ConfigError when the module configured none."""
    optimizers = trainer.optimizers
    if not optimizers:
        raise ConfigError(
            f"{owner}: the LightningModule configured no optimizer (trainer.optimizers is empty); "
            "configure_optimizers must return the SGD optimizer whose rate this callback controls"
        )
    return optimizers[0]


def _ensure_global_lr(optimizer: torch.optim.Optimizer) -> None:
    """Give every param group a ``global_lr`` (copied from its ``lr``) if it has none yet."""
    for group in optimizer.param_groups:
        if GLOBAL_LR_KEY not in group:
            group[GLOBAL_LR_KEY] = float(group["lr"])


def _warn_setting_mismatch(owner: str, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Warn when a checkpoint was written with other settings than the callback now has."""
    differing = {k: (saved[k], current[k]) for k in current if k in saved and saved[k] != current[k]}
    if differing:
        text = ", ".join(f"{k}: checkpoint {old!r} -> now {new!r}" for k, (old, new) in differing.items())
        warnings.warn(
            f"{owner}: resuming with settings that differ from the checkpoint ({text}); "
            "the current settings are used, so the run will not match an uninterrupted one",
            stacklevel=3,
        )


def host_scalar(value: float) -> torch.Tensor:
    """``value`` as a CPU float64 tensor, for `LightningModule.log` at every step.

    Lightning turns a Python number into a tensor on the module's device: on a GPU that is a
    host-to-device copy, which waits for the queued GPU work, at every step. A CPU tensor is
    logged where it is (Lightning keeps the logged value on the value's device).
    """
    return torch.tensor(float(value), dtype=torch.float64)


class LocalDecay(Callback):
    """Per-batch learning-rate decay, reset at the start of every epoch (paper formula 1).

    At the start of every training epoch each param group's ``lr`` is reset to its ``global_lr``
    and the in-epoch step counter ``i`` to 0. After each training batch that took an optimizer
    step (``i = 0, 1, 2, ...`` within the epoch; with gradient accumulation, batches that only
    accumulate do not count, like Keras' ``iterations`` which counts updates), the rate of every
    group is updated:

    * ``formula="paper"`` -- formula (1) as printed, compounding:
      ``lr_{i+1} = lr_i / (1 + decay * i)``, so the rate used by the n-th step of an epoch is
      ``lr_n = lr0 / prod_{k<n} (1 + decay * k)``.
    * ``formula="keras"`` -- the schedule of the authors' framework (Keras SGD ``decay``):
      ``lr_n = lr0 / (1 + decay * n)``, with ``n`` counted within the epoch (reset with the epoch,
      as the paper says).

    ``lr0`` is the group's ``global_lr``. The two differ a lot: the printed formula compounds, so
    ``lr_n / lr0 ~ exp(-decay * n^2 / 2)``. At ``decay = 1e-6`` (computed exactly):

    ======  ================  =================
    n       paper lr_n / lr0  keras lr_n / lr0
    ======  ================  =================
    100     0.99506           0.99990
    500     0.88274           0.99950
    663     0.80300           0.99934
    1000    0.60694           0.99900
    2000    0.13565           0.99800
    3000    0.011176          0.99701
    5000    3.8144e-06        0.99502
    ======  ================  =================

    (663 steps is one MTAT epoch of 15,244 clips at batch 23.) The Keras schedule barely moves
    within an epoch; the printed one cuts the rate by 40 % after 1,000 steps and to almost nothing
    after 3,000.

    The rate used by each step is logged as ``train/lr`` (first param group; further groups as
    ``train/lr_pg{k}``) through ``pl_module.log(on_step=True, on_epoch=False)``, which works with
    or without a logger.

    ``state_dict()`` holds the settings and the in-epoch counter, so a run resumed from a
    mid-epoch checkpoint continues the sequence exactly (the rates themselves are restored with
    the optimizer's param groups).

    Args:
        decay: the local decay constant ``d`` (>= 0; the paper's ``local_decay``).
        formula: ``"paper"`` (compounding, as printed) or ``"keras"`` (as the Keras optimizer does).
    """

    FORMULAS = LOCAL_DECAY_FORMULAS

    def __init__(self, decay: float = 1e-6, formula: Literal["paper", "keras"] = "paper") -> None:
        super().__init__()
        if formula not in self.FORMULAS:
            raise ConfigError(f"LocalDecay: formula={formula!r} is not one of {self.FORMULAS}")
        if not (isinstance(decay, (int, float)) and math.isfinite(decay) and decay >= 0):
            raise ConfigError(f"LocalDecay: decay={decay!r} must be a finite number >= 0")
        self.decay = float(decay)
        self.formula = formula
        self.step_in_epoch = 0
        """Optimizer steps taken so far in the current epoch (the ``i`` of formula 1)."""
        self._last_global_step: int | None = None

    # ---------------------------------------------------------------- rate arithmetic
    def next_lr(self, lr: float, global_lr: float, i: int) -> float:
        """Rate after the ``i``-th step of an epoch (0-based), given the rate ``lr`` that step used."""
        if self.formula == "paper":
            return lr / (1.0 + self.decay * i)
        return global_lr / (1.0 + self.decay * (i + 1))

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = _first_optimizer(trainer, "LocalDecay")
        if len(trainer.optimizers) > 1:
            warnings.warn("LocalDecay: only trainer.optimizers[0] is decayed; the others are left alone", stacklevel=2)
        _ensure_global_lr(optimizer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = _first_optimizer(trainer, "LocalDecay")
        _ensure_global_lr(optimizer)
        for group in optimizer.param_groups:
            group["lr"] = group[GLOBAL_LR_KEY]
        self.step_in_epoch = 0
        self._last_global_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._last_global_step is not None and trainer.global_step == self._last_global_step:
            return  # this batch only accumulated gradients: no update, no step to count
        self._last_global_step = trainer.global_step
        optimizer = _first_optimizer(trainer, "LocalDecay")
        used = [float(group["lr"]) for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = self.next_lr(float(group["lr"]), float(group[GLOBAL_LR_KEY]), self.step_in_epoch)
        self.step_in_epoch += 1
        for k, lr in enumerate(used):
            name = "train/lr" if k == 0 else f"train/lr_pg{k}"
            pl_module.log(name, host_scalar(lr), on_step=True, on_epoch=False, batch_size=1)

    # ---------------------------------------------------------------- state
    def _settings(self) -> dict[str, Any]:
        return {"decay": self.decay, "formula": self.formula}

    def state_dict(self) -> dict[str, Any]:
        """Settings plus the in-epoch step counter and the global step it was last advanced at."""
        return {
            **self._settings(),
            "step_in_epoch": self.step_in_epoch,
            "last_global_step": self._last_global_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counter from :meth:`state_dict`'s output (warns if the settings differ)."""
        _warn_setting_mismatch("LocalDecay", state_dict, self._settings())
        self.step_in_epoch = int(state_dict["step_in_epoch"])
        last = state_dict.get("last_global_step")
        self._last_global_step = None if last is None else int(last)


class GlobalDecayRestart(Callback):
    """Early stopping that restarts from the best weights with a lower rate (paper formula 2).

    After every validation run during ``fit`` (the sanity check is skipped) the value of
    ``trainer.callback_metrics[monitor]`` is compared with the best so far. An improvement (by
    more than ``min_delta``; NaN never improves) records the score, its epoch and an in-memory CPU
    copy of ``pl_module.state_dict()`` (parameters and buffers). After ``patience`` validations in
    a row without improvement:

    * if ``max_restarts`` restarts have already happened: the best weights are restored and
      training stops (``trainer.should_stop = True``; Lightning may still run on to
      ``min_epochs``);
    * otherwise a restart: the restart count goes up, the best weights are restored, the
      optimizer state is cleared (momentum buffers built on discarded weights must not carry over),
      every param group gets the new rate in both ``lr`` and ``global_lr``, and the wait counter
      restarts from 0.

    The new rate (``global_lr`` is the epoch-start rate of a group, not the locally decayed one):

    * ``schedule="paper"``: formula (2) as printed, ``mu_new = mu_current * g^(n + 1)`` with
      ``n`` the number of early stops *before* the current one, ``mu_current`` the group's current
      ``global_lr`` and ``g = global_decay``. The first restart multiplies the rate by ``g``, the
      second by ``g^2``, ... so it compounds: after ``k`` restarts ``lr0 * g^(k(k+1)/2)``
      (``g = 0.2``: 0.2, 0.008, 6.4e-5, 1.0e-7 times ``lr0``).
    * ``schedule="sample_cnn"``: the recipe of the SampleCNN code the paper builds on,
      ``lr = lr0 * g^k`` at the ``k``-th restart (0.2, 0.04, 0.008, 0.0016 times ``lr0``), with
      ``lr0`` the group's ``global_lr`` at the start of the (first) fit.

    The defaults (patience 3, global_decay 0.2, 4 restarts) follow the SampleCNN recipe; the
    paper gives no values.

    Under DDP every rank reads its own ``callback_metrics`` (log the monitored metric synced,
    e.g. ``sync_dist=True`` or a torchmetrics metric) and the decision is then taken from rank 0
    and broadcast (``trainer.strategy.broadcast``), so all ranks restart and stop together. Every
    rank keeps its own copy of the best weights (identical under DDP).

    Logs ``train/restarts`` and ``train/global_lr`` (first param group) at every training epoch
    end and prints one line per restart/stop on rank 0 when ``verbose``.

    ``state_dict()`` holds the settings, best score and epoch, wait and restart counters,
    ``lr0`` and the best weights (so checkpoints carry a second copy of the weights), so a run
    resumed from a checkpoint decides exactly as an uninterrupted one. Checkpoints written by
    ``ModelCheckpoint`` on the same validation contain the state *after* this callback's decision
    (Lightning runs checkpoint callbacks last).

    Args:
        monitor: key of ``trainer.callback_metrics`` to watch.
        mode: ``"min"`` (lower is better) or ``"max"``.
        patience: validations without improvement before a restart/stop (>= 1).
        global_decay: the factor ``g`` in (0, 1].
        max_restarts: restarts allowed before the next plateau stops training (>= 0).
        schedule: ``"paper"`` or ``"sample_cnn"`` (see above).
        min_delta: minimum change that counts as an improvement (>= 0).
        verbose: print a line on rank 0 for every restart and for the stop.
    """

    MODES = ("min", "max")
    SCHEDULES = GLOBAL_DECAY_SCHEDULES

    def __init__(
        self,
        monitor: str = "val/loss",
        mode: Literal["min", "max"] = "min",
        patience: int = 3,
        global_decay: float = 0.2,
        max_restarts: int = 4,
        schedule: Literal["paper", "sample_cnn"] = "paper",
        min_delta: float = 0.0,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        name = "GlobalDecayRestart"
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"{name}: monitor={monitor!r} must be a non-empty metric name")
        if mode not in self.MODES:
            raise ConfigError(f"{name}: mode={mode!r} is not one of {self.MODES}")
        if schedule not in self.SCHEDULES:
            raise ConfigError(f"{name}: schedule={schedule!r} is not one of {self.SCHEDULES}")
        if not (isinstance(patience, int) and patience >= 1):
            raise ConfigError(f"{name}: patience={patience!r} must be an integer >= 1")
        if not (isinstance(max_restarts, int) and max_restarts >= 0):
            raise ConfigError(f"{name}: max_restarts={max_restarts!r} must be an integer >= 0")
        if not (isinstance(global_decay, (int, float)) and 0.0 < global_decay <= 1.0):
            raise ConfigError(f"{name}: global_decay={global_decay!r} must be in (0, 1]")
        if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta) and min_delta >= 0):
            raise ConfigError(f"{name}: min_delta={min_delta!r} must be a finite number >= 0")
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.global_decay = float(global_decay)
        self.max_restarts = max_restarts
        self.schedule = schedule
        self.min_delta = float(min_delta)
        self.verbose = verbose

        self.best_score = math.inf if mode == "min" else -math.inf
        """Best monitored value so far."""
        self.best_epoch: int | None = None
        """Epoch (``trainer.current_epoch``) of the best value; None before the first one."""
        self.wait = 0
        """Validations in a row without improvement since the last improvement or restart."""
        self.restarts = 0
        """Restarts done so far."""
        self.stopped = False
        """True once the last plateau stopped training."""
        self.lr0: list[float] | None = None
        """Each param group's ``global_lr`` at the start of the first fit."""
        self.best_weights: dict[str, torch.Tensor] | None = None
        """CPU copy of ``pl_module.state_dict()`` at the best epoch."""

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    # ---------------------------------------------------------------- decisions
    def _improves(self, score: float) -> bool:
        if math.isnan(score):
            return False
        if self.mode == "min":
            return score < self.best_score - self.min_delta
        return score > self.best_score + self.min_delta

    def next_action(self, score: float) -> Literal["improve", "wait", "restart", "stop"]:
        """What the next validation with this ``score`` would do, without changing any state.

        ``"improve"``: new best; ``"wait"``: no improvement, patience left; ``"restart"``:
        restart with a lower rate; ``"stop"``: restore the best weights and stop training.
        """
        if self.stopped:
            return "stop"
        if self._improves(float(score)):
            return "improve"
        if self.wait + 1 < self.patience:
            return "wait"
        return "stop" if self.restarts >= self.max_restarts else "restart"

    def new_rate(self, current_global_lr: float, lr0: float, restarts_before: int) -> float:
        """Rate of a param group after the restart that follows ``restarts_before`` restarts."""
        g = self.global_decay
        if self.schedule == "paper":
            return current_global_lr * g ** (restarts_before + 1)
        return lr0 * g ** (restarts_before + 1)

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = _first_optimizer(trainer, "GlobalDecayRestart")
        if len(trainer.optimizers) > 1:
            warnings.warn(
                "GlobalDecayRestart: only trainer.optimizers[0] gets the lower rate and a cleared state",
                stacklevel=2,
            )
        _ensure_global_lr(optimizer)
        if self.lr0 is None:  # not restored from a checkpoint
            self.lr0 = [float(group[GLOBAL_LR_KEY]) for group in optimizer.param_groups]

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        score = self._read_monitor(trainer)
        decision = {"action": self.next_action(score), "score": score}
        decision = trainer.strategy.broadcast(decision, src=0)
        self._apply(trainer, pl_module, decision["action"], float(decision["score"]))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = _first_optimizer(trainer, "GlobalDecayRestart")
        group = optimizer.param_groups[0]
        # identical on every rank; sync_dist only keeps Lightning from warning under DDP
        pl_module.log(
            "train/restarts", float(self.restarts), on_step=False, on_epoch=True, batch_size=1, sync_dist=True
        )
        pl_module.log(
            "train/global_lr",
            float(group.get(GLOBAL_LR_KEY, group["lr"])),
            on_step=False,
            on_epoch=True,
            batch_size=1,
            sync_dist=True,
        )

    # ---------------------------------------------------------------- internals
    def _read_monitor(self, trainer: pl.Trainer) -> float:
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            available = sorted(metrics.keys())
            raise ConfigError(
                f"GlobalDecayRestart(monitor={self.monitor!r}): no such metric after validation; "
                f"available keys in trainer.callback_metrics: {available}. Log it during validation "
                f"(self.log({self.monitor!r}, ...)) or set monitor to one of the available keys"
            )
        value = metrics[self.monitor]
        return float(value.item() if isinstance(value, torch.Tensor) else value)

    def _say(self, trainer: pl.Trainer, message: str) -> None:
        if self.verbose and trainer.is_global_zero:
            tell(f"GlobalDecayRestart: {message}")

    def _restore_best(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.best_weights is None:
            warnings.warn(
                f"GlobalDecayRestart: no best weights to restore ({self.monitor!r} never improved, "
                "e.g. it was NaN from the start); keeping the current weights",
                stacklevel=2,
            )
            return
        pl_module.load_state_dict(self.best_weights, strict=True)

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, action: str, score: float) -> None:
        epoch = trainer.current_epoch
        if action == "improve":
            self.best_score = score
            self.best_epoch = epoch
            self.best_weights = {
                k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()
            }
            self.wait = 0
            return
        if action == "wait":
            self.wait += 1
            return
        if action == "stop":
            if not self.stopped:
                self.wait += 1
                self._restore_best(trainer, pl_module)
                self.stopped = True
                self._say(
                    trainer,
                    f"epoch {epoch}: {self.monitor} has not improved for {self.wait} validations after "
                    f"{self.restarts} restarts; restored the weights of epoch {self.best_epoch} "
                    f"({self.monitor}={self.best_score:.6g}) and stopping",
                )
            trainer.should_stop = True
            return
        if action != "restart":
            raise RuntimeError(f"GlobalDecayRestart: unknown action {action!r}")
        optimizer = _first_optimizer(trainer, "GlobalDecayRestart")
        _ensure_global_lr(optimizer)
        if self.lr0 is None:
            self.lr0 = [float(group[GLOBAL_LR_KEY]) for group in optimizer.param_groups]
        if len(self.lr0) != len(optimizer.param_groups):
            raise ConfigError(
                f"GlobalDecayRestart: the optimizer has {len(optimizer.param_groups)} param groups but the "
                f"callback's state (from a checkpoint?) recorded {len(self.lr0)}"
            )
        self._restore_best(trainer, pl_module)
        optimizer.state.clear()
        for group, lr0 in zip(optimizer.param_groups, self.lr0):
            rate = self.new_rate(float(group[GLOBAL_LR_KEY]), lr0, self.restarts)
            group[GLOBAL_LR_KEY] = rate
            group["lr"] = rate
        self.restarts += 1
        self.wait = 0
        self._say(
            trainer,
            f"epoch {epoch}: {self.monitor} has not improved for {self.patience} validations; restart "
            f"{self.restarts}/{self.max_restarts} from epoch {self.best_epoch} "
            f"({self.monitor}={self.best_score:.6g}) with lr {optimizer.param_groups[0]['lr']:.6g}",
        )

    # ---------------------------------------------------------------- state
    def _settings(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "patience": self.patience,
            "global_decay": self.global_decay,
            "max_restarts": self.max_restarts,
            "schedule": self.schedule,
            "min_delta": self.min_delta,
        }

    def state_dict(self) -> dict[str, Any]:
        """Settings, counters, best score/epoch, ``lr0`` and the best weights (CPU tensors)."""
        return {
            **self._settings(),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "restarts": self.restarts,
            "stopped": self.stopped,
            "lr0": None if self.lr0 is None else list(self.lr0),
            "best_weights": None if self.best_weights is None else dict(self.best_weights),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore everything :meth:`state_dict` holds (warns if the settings differ)."""
        _warn_setting_mismatch("GlobalDecayRestart", state_dict, self._settings())
        self.best_score = float(state_dict["best_score"])
        best_epoch = state_dict["best_epoch"]
        self.best_epoch = None if best_epoch is None else int(best_epoch)
        self.wait = int(state_dict["wait"])
        self.restarts = int(state_dict["restarts"])
        self.stopped = bool(state_dict["stopped"])
        lr0 = state_dict["lr0"]
        self.lr0 = None if lr0 is None else [float(x) for x in lr0]
        weights = state_dict["best_weights"]
        self.best_weights = (
            None if weights is None else {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
        )
