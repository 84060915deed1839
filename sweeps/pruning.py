"""The sweep's pruning callback (kept apart from `sweeps.study` so that module imports without Lightning)."""

from __future__ import annotations

import math
import warnings

from optuna_integration import PyTorchLightningPruningCallback

from infrastructure.errors import ConfigError

OBJECTIVE = "val/roc_auc"  # what a sweep maximises: the best validation macro ROC-AUC of a trial


class SweepPruningCallback(PyTorchLightningPruningCallback):
    """optuna-integration's pruning callback that refuses a missing monitor and keeps the best value.

    The parent only warns when the monitored metric is missing (a misspelt name would never
    prune and never score); here that is a ConfigError. `best` is the highest finite value
    reported (starting from `initial_best` when a retried trial resumes an earlier run).

    `held_steps`: the epochs a retried trial already holds from its killed run. A run killed after it
    reported an epoch but before that epoch's checkpoint validates the epoch again when it resumes;
    resume is exact, so the value is the one held, and Optuna keeps the first with a warning the user
    cannot act on, which is left out for those epochs alone.
    """

    def __init__(self, trial, monitor: str = OBJECTIVE, initial_best: float | None = None, held_steps=()):
        super().__init__(trial, monitor)
        self.best = initial_best
        self.held_steps = frozenset(int(step) for step in held_steps)
        self.reported: dict[int, float] = {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise ConfigError(f"the sweep's objective {self.monitor!r} was not logged by validation "
                              f"(logged: {logged})")
        value = float(value)
        self.reported[pl_module.current_epoch] = value
        if math.isfinite(value):
            self.best = value if self.best is None else max(self.best, value)
        with warnings.catch_warnings():
            if pl_module.current_epoch in self.held_steps:
                warnings.filterwarnings("ignore", message="The reported value is ignored because this `step=")
            super().on_validation_end(trainer, pl_module)
