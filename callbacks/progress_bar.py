"""The training progress bar: one line on stderr that keeps the epoch, the loss and the validation ROC-AUC legible.

Lightning's `TQDMProgressBar` writes to stdout (where the results go) and appends every
`prog_bar` metric as `name=value`, padded: at a usual terminal width its postfix squeezed the bar
to a single character. This bar writes to stderr and reads, e.g.

    epoch 3/100 ▕██████      ▏ 120/300 loss 0.412 val AUC 0.781 00:42<01:03

with short names and three decimals. The postfix items are shown in order of importance (loss, val
AUC, val loss) as long as the bar keeps `MIN_BAR_WIDTH` columns: at a narrow terminal the items
that do not fit are dropped, never the bar. Validation, sanity-check and test bars are short lines
of the same form.

`tell(message)` prints a callback's message on stderr above the bar (not through it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from tqdm.utils import disp_len

MIN_BAR_WIDTH = 10
"""Columns the bar keeps before a postfix item is dropped."""
SHOWN_METRICS = (("train/loss_step", "loss"), ("val/roc_auc", "val AUC"), ("val/loss", "val loss"))
"""The logged metrics the training bar shows, most important first, with their short names."""
LINE_FORMAT = "{desc} ▕{bar}▏ {n_fmt}/{total_fmt}{stats} {elapsed}<{remaining}"


class FittedBar(Tqdm):
    """A tqdm bar whose postfix items are dropped, last first, when they would squeeze the bar."""

    def __init__(self, *args: Any, describe: Callable[[], str] | None = None, **kwargs: Any) -> None:
        self.items: dict[str, str] = {}
        self.describe = describe
        kwargs.setdefault("bar_format", LINE_FORMAT)
        kwargs.setdefault("file", sys.stderr)
        if describe is not None:
            kwargs["desc"] = describe()
        super().__init__(*args, **kwargs)
        if self.ascii is True and self.bar_format:  # a stream that cannot encode the block characters
            self.bar_format = self.bar_format.replace("▕", "|").replace("▏", "|")

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """`describe()` when given, in place of Lightning's names ("Epoch 0", "Validation DataLoader 0"); no colon."""
        self.set_description_str(self.describe() if self.describe is not None else desc, refresh=refresh)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs: Any) -> None:
        """Keep the items (name -> value), formatted to three decimals; `format_dict` picks those that fit."""
        values = {**(ordered_dict or {}), **kwargs}
        self.items = {name: f"{value:.3f}" if isinstance(value, float) else str(value)
                      for name, value in values.items()}
        if refresh:
            self.refresh()

    @property
    def format_dict(self) -> dict:
        values = super().format_dict
        if values.get("bar_format") is None:  # a disabled bar
            return values
        ncols = values.get("ncols")
        shown = list(self.items.items())
        while shown and ncols and self._bar_width(values, shown, ncols) < MIN_BAR_WIDTH:
            shown.pop()
        values["stats"] = _stats_text(shown)
        return values

    def _bar_width(self, values: dict, shown: list[tuple[str, str]], ncols: int) -> int:
        """The bar's width in a line of `ncols` columns holding the `shown` items."""
        without_bar = dict(values, ncols=None, stats=_stats_text(shown),
                           bar_format=values["bar_format"].replace("{bar}", ""))
        return ncols - disp_len(self.format_meter(**without_bar))


def _stats_text(items: list[tuple[str, str]]) -> str:
    return "".join(f" {name} {value}" for name, value in items)


def epoch_description(epoch: int, max_epochs: int | None) -> str:
    """'epoch 3/100', counted from 1 (just 'epoch 3' when training is bounded by steps, not epochs)."""
    return f"epoch {epoch + 1}/{max_epochs}" if max_epochs is not None and max_epochs > 0 else f"epoch {epoch + 1}"


def shown_metrics(metrics: dict) -> dict[str, float]:
    """The logged metrics the bar shows, under their short names (others, like Lightning's `v_num`, are left out)."""
    shown = {}
    for key, name in SHOWN_METRICS:
        if key in metrics:
            value = metrics[key]
            shown[name] = float(value.item() if hasattr(value, "item") else value)
    return shown


class TaggingProgressBar(TQDMProgressBar):
    """Lightning's tqdm bars on stderr, with the fitted training line above."""

    def _bar(self, describe: Callable[[], str], position: int, leave: bool, smoothing: float = 0.3) -> FittedBar:
        return FittedBar(describe=describe, position=position, disable=self.is_disabled, leave=leave,
                         dynamic_ncols=True, smoothing=smoothing)

    def init_sanity_tqdm(self) -> Tqdm:
        return self._bar(lambda: "sanity check", 2 * self.process_position, leave=False)

    def init_train_tqdm(self) -> Tqdm:
        trainer = self.trainer
        return self._bar(lambda: epoch_description(trainer.current_epoch, trainer.max_epochs),
                         2 * self.process_position, leave=True, smoothing=0)

    def init_validation_tqdm(self) -> Tqdm:
        has_main_bar = self.trainer.state.fn != "validate"  # as Lightning's: no training bar in trainer.validate()
        return self._bar(lambda: "validation", 2 * self.process_position + has_main_bar, leave=not has_main_bar)

    def init_test_tqdm(self) -> Tqdm:
        return self._bar(lambda: "test", 2 * self.process_position, leave=True)

    def init_predict_tqdm(self) -> Tqdm:
        return self._bar(lambda: "predict", 2 * self.process_position, leave=True, smoothing=0)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        return shown_metrics(trainer.progress_bar_metrics)

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """Lightning's `print` above the active bar, on stderr (tqdm.write's default is stdout)."""
        super().print(*args, sep=sep, **{"file": sys.stderr, **kwargs})


def tell(message: str) -> None:
    """Print a callback's message on stderr, above the progress bars drawn there (they are redrawn below it)."""
    FittedBar.write(message, file=sys.stderr)
