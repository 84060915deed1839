"""An exponential moving average of the weights, used for every validation, checkpoint and the test.

Lightning 2.6's `EMAWeightAveraging` keeps the average (`torch.optim.swa_utils.AveragedModel`,
parameters and buffers) and swaps it into the module for each validation, so model selection,
the best checkpoint (whose `state_dict` holds the averaged weights; the raw ones go under
`current_model_state` for resuming) and hence the test all use the averaged weights, and at the end
of training the average is copied into the module.

The decay warms up: update n (the first, n = 0, copies the weights) uses min(decay, (1 + n) / (10 + n)), the schedule
of TensorFlow's `ExponentialMovingAverage(num_updates=...)`. With a fixed 0.999 the average of a
short run is mostly the weights of its first step (after 300 steps they still weigh 0.74), so a
few epochs on a small dataset evaluated nearly untrained weights; with the warm-up the average
follows the early, fast-moving weights and reaches the full decay after about 9,000 steps (at
0.999). The count is the AveragedModel's `n_averaged` buffer, saved in the checkpoint, so a resumed
run continues the same schedule.

Another addition: the tagging module's `thresholds` buffer (with its `threshold_fallback` record)
is chosen at the end of each validation (for the averaged weights that were just evaluated) and
written into the module's own buffers after Lightning has swapped the weights back; without
copying them into the average as well, the checkpoint would carry an average of old thresholds
instead of the ones chosen for its weights.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

from infrastructure.errors import ConfigError


class EMAWeights(EMAWeightAveraging):
    """EMA of the weights with decay `decay` per optimizer step (see the module docstring)."""

    def __init__(self, decay: float) -> None:
        if not 0.0 < float(decay) < 1.0:
            raise ConfigError(f"--ema-decay must be in (0, 1) (0 turns the average off), got {decay}")
        super().__init__(decay=float(decay))
        self.decay = float(decay)
        self._kwargs["avg_fn"] = warmed_up_ema(self.decay)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        average = self._average_model
        if average is None:
            return
        for name in ("thresholds", "threshold_fallback"):  # the thresholds and the record of their fallbacks
            if hasattr(pl_module, name):
                mine = getattr(average.module, name)
                mine.copy_(getattr(pl_module, name).to(mine.device))


def warmed_up_ema(decay: float):
    """AveragedModel's `avg_fn` for an EMA whose decay at update n is min(decay, (1 + n) / (10 + n))."""

    @torch.no_grad()
    def update(average: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
        # tensor arithmetic, so a GPU run does not wait for the count on every parameter
        step_decay = torch.clamp((1.0 + n_averaged) / (10.0 + n_averaged), max=decay).to(average.dtype)
        return step_decay * average + (1.0 - step_decay) * current

    return update
