"""The training progress bar: its line at 80 and 120 columns, and where it writes (stderr, never stdout)."""

from __future__ import annotations

import io
import re

import lightning.pytorch as pl
import pytest
import torch
from tqdm.utils import disp_len

from callbacks.progress_bar import MIN_BAR_WIDTH, FittedBar, TaggingProgressBar, epoch_description, shown_metrics, tell
from tests.support.tiny_lightning import TinyModule, make_loader

LOGGED = {"train/loss_step": 0.41234, "train/loss_epoch": 0.5, "val/roc_auc": 0.78123, "val/loss": 0.5832, "v_num": 7}


def _line(ncols: int, unicode: bool = True) -> str:
    """The training bar's line at `ncols` columns: epoch 3 of 100, 120 of 300 batches after 42 s."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8") if unicode else io.StringIO()  # StringIO: no encoding
    clock = [1000.0]
    bar = FittedBar(total=300, file=out, ncols=ncols, describe=lambda: epoch_description(2, 100), smoothing=0)
    bar._time = lambda: clock[0]
    bar.start_t = clock[0]
    clock[0] += 42
    bar.n = 120
    bar.set_postfix(shown_metrics(LOGGED), refresh=False)
    line = str(bar)
    bar.disable = True  # nothing more written to the fake file
    return line


def _bar_width(line: str, ends: str = "▕▏") -> int:
    return len(re.search(f"{re.escape(ends[0])}(.*){re.escape(ends[1])}", line).group(1))


@pytest.mark.parametrize("ncols", [80, 120])
def test_the_line_shows_epoch_loss_and_validation_auc_and_keeps_its_bar(ncols):
    line = _line(ncols)
    assert disp_len(line) <= ncols
    assert line.startswith("epoch 3/100 ▕") and " 120/300 " in line and line.endswith(" 00:42<01:03")
    assert "loss 0.412" in line and "val AUC 0.781" in line and "v_num" not in line
    assert _bar_width(line) >= 20  # the bar, not the postfix, has the room


def test_items_that_do_not_fit_are_dropped_last_first_never_the_bar():
    wide, standard, narrow = _line(120), _line(80), _line(60)
    assert "val loss 0.583" in wide and "val loss" not in standard  # the least important item goes first
    assert "loss 0.412" in narrow and "val AUC" not in narrow and _bar_width(narrow) >= MIN_BAR_WIDTH
    tiny = _line(30)
    assert "loss" not in tiny and tiny.startswith("epoch 3/100") and disp_len(tiny) <= 30


def test_a_stream_without_unicode_gets_an_ascii_line():
    line = _line(80, unicode=False)
    assert line.isascii() and "loss 0.412" in line and "val AUC 0.781" in line and _bar_width(line, "||") >= 20


def test_epoch_description_counts_from_one():
    assert epoch_description(0, 100) == "epoch 1/100"
    assert epoch_description(4, -1) == "epoch 5"  # bounded by steps: no epoch total
    assert shown_metrics({"train/loss_step": torch.tensor(0.25)}) == {"loss": 0.25}


class _Tagging(TinyModule):
    """TinyModule logging what the suite's module shows on the bar."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        self.log("val/roc_auc", 0.75, prog_bar=True)
        tell("a callback's note")

    def test_step(self, batch, batch_idx):
        return self.validation_step(batch, batch_idx)


def test_a_training_writes_its_bars_to_stderr_and_nothing_to_stdout(capsys):
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, callbacks=[TaggingProgressBar()], num_sanity_val_steps=1)
    trainer.fit(_Tagging(), train_dataloaders=make_loader(), val_dataloaders=make_loader())
    trainer.test(_Tagging(), dataloaders=make_loader(), verbose=False)
    out, err = capsys.readouterr()
    assert out == ""
    lines = [line.strip() for line in re.split(r"[\r\n]", err) if line.strip()]
    assert any(line.startswith("epoch 2/2 ▕") and "5/5" in line and "val AUC 0.750" in line for line in lines)
    assert any(line.startswith("validation ▕") for line in lines) and any(line.startswith("test ▕") for line in lines)
    assert "a callback's note" in lines and not any("DataLoader" in line or "Epoch" in line for line in lines)
