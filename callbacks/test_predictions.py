"""The clip-level test predictions of a run, kept for its figures (and its saved predictions)."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback


class TestPredictionsCapture(Callback):
    """Keeps the clip-level test probabilities, targets and clip ids of `TaggingModule.test_predictions`.

    Runs before the module's own `on_test_epoch_end` (Lightning calls callbacks first) and calls
    the metric's `compute()`, whose result torchmetrics caches for the module's call, so the
    predictions are gathered once (on every rank under DDP, as the module needs anyway).
    """

    def __init__(self) -> None:
        super().__init__()
        self.probs: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        self.clip_ids: torch.Tensor | None = None

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        predictions = getattr(pl_module, "test_predictions", None)
        if predictions is None:
            return
        probs, targets, clip_ids = predictions.compute()
        self.probs, self.targets, self.clip_ids = probs.cpu(), targets.cpu(), clip_ids.cpu()
