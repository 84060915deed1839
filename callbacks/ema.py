"""An exponential moving average of the weights, used for every validation, checkpoint and the test.

Lightning 2.6's `EMAWeightAveraging` keeps the average (`torch.optim.swa_utils.AveragedModel`,
parameters and buffers) and swaps it into the module for each validation, so model selection,
the best checkpoint (whose `state_dict` holds the averaged weights; the raw ones go under
`current_model_state` for resuming) and hence the test all use the averaged weights, and at the end
of training the average is copied into the module.

One addition: the tagging module's `thresholds` buffer is chosen at the end of each validation
(for the averaged weights that were just evaluated) and written into the module's own buffer after
Lightning has swapped the weights back; without copying it into the average as well, the
checkpoint would carry an average of old thresholds instead of the ones chosen for its weights.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EMAWeightAveraging

from datamodules.errors import ConfigError


class EMAWeights(EMAWeightAveraging):
    """EMA of the weights with decay `decay` per optimizer step (see the module docstring)."""

    def __init__(self, decay: float) -> None:
        if not 0.0 < float(decay) < 1.0:
            raise ConfigError(f"--ema-decay must be in (0, 1) (0 turns the average off), got {decay}")
        super().__init__(decay=float(decay))
        self.decay = float(decay)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        average = self._average_model
        if average is not None and hasattr(pl_module, "thresholds"):
            average.module.thresholds.copy_(pl_module.thresholds.to(average.module.thresholds.device))
