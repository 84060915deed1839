"""Tests of the two-level learning-rate decay callbacks and the RNG-state checkpoint callback.

Everything trains a tiny self-contained LightningModule (linear layers on random tensors, SGD
with momentum 0.9) on CPU for a few epochs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from callbacks.lr_decay import GLOBAL_LR_KEY, GlobalDecayRestart, LocalDecay
from callbacks.rng_state import RNGStateCheckpoint, capture_rng_states, restore_rng_states
from experiments.trainer import close_process_group
from infrastructure.errors import ConfigError
from tests.support.tiny_lightning import (
    Recorder,
    TinyModule,
    make_loader,
    make_trainer,
    weights_equal,
)


def paper_factor(n: int, d: float) -> float:
    """lr_n / lr0 of the printed formula (1): 1 / prod_{k<n} (1 + d k)."""
    return 1.0 / math.prod(1.0 + d * k for k in range(n))


def keras_factor(n: int, d: float) -> float:
    """lr_n / lr0 of the Keras schedule: 1 / (1 + d n)."""
    return 1.0 / (1.0 + d * n)


@pytest.fixture(autouse=True)
def _quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
        warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
        yield


# ------------------------------------------------------------------------------ LocalDecay


@pytest.mark.parametrize("formula,factor", [("paper", paper_factor), ("keras", keras_factor)])
def test_local_decay_rate_sequence_matches_closed_form_across_epochs(formula, factor):
    d = 0.05
    rec = Recorder()
    model = TinyModule(lrs=(0.01, 0.05))
    make_trainer([LocalDecay(decay=d, formula=formula), rec], max_epochs=3).fit(
        model, make_loader(), make_loader()
    )
    assert len(rec.step_lrs) == 15
    for idx, (epoch, lrs) in enumerate(rec.step_lrs):
        n = idx % 5  # step within the epoch: the counter resets at every epoch start
        assert epoch == idx // 5
        for lr, lr0 in zip(lrs, (0.01, 0.05)):
            assert math.isclose(lr, lr0 * factor(n, d), rel_tol=1e-12), (formula, idx, lr)
    # the two formulas are really different from the third step of an epoch on
    other = keras_factor if factor is paper_factor else paper_factor
    assert not math.isclose(rec.step_lrs[3][1][0], 0.01 * other(3, d), rel_tol=1e-6)
    # every epoch starts again from global_lr
    assert [lrs for (_, lrs) in rec.step_lrs[::5]] == [[0.01, 0.05]] * 3


def test_local_decay_counts_optimizer_steps_under_gradient_accumulation():
    d = 0.1
    rec = Recorder()
    make_trainer([LocalDecay(decay=d, formula="paper"), rec], max_epochs=2, accumulate_grad_batches=2).fit(
        TinyModule(), make_loader(n=24), make_loader()
    )
    # 6 batches -> 3 optimizer steps per epoch, decayed per step, not per batch
    got = [lrs[0] for _, lrs in rec.step_lrs]
    want = [0.01 * paper_factor(n, d) for n in range(3)] * 2
    assert len(got) == 6
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(got, want))


def test_local_decay_sets_global_lr_and_logs_train_lr(tmp_path):
    rec = Recorder()
    model = TinyModule()
    trainer = make_trainer(
        [LocalDecay(decay=0.1), rec],
        max_epochs=2,
        logger=CSVLogger(tmp_path, name="run", version=0),
        log_every_n_steps=1,
    )
    trainer.fit(model, make_loader(), make_loader())
    assert trainer.optimizers[0].param_groups[0][GLOBAL_LR_KEY] == 0.01
    with open(tmp_path / "run" / "version_0" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/lr")]
    logged = [float(r["train/lr"]) for r in rows]
    assert logged == pytest.approx([lrs[0] for _, lrs in rec.step_lrs], rel=1e-6)
    assert len(logged) == 10


def test_local_decay_logs_without_logger():
    trainer = make_trainer([LocalDecay(decay=0.1)], max_epochs=1)
    trainer.fit(TinyModule(), make_loader(), make_loader())
    assert math.isclose(float(trainer.callback_metrics["train/lr"]), 0.01 * paper_factor(4, 0.1), rel_tol=1e-6)


def test_local_decay_rejects_bad_settings():
    with pytest.raises(ConfigError, match="formula"):
        LocalDecay(formula="exponential")
    with pytest.raises(ConfigError, match="decay"):
        LocalDecay(decay=-1.0)


# ------------------------------------------------------------------------ GlobalDecayRestart

# epoch:   0    1    2     3     4    5     6     7    8
SCRIPT = [1.0, 0.9, 0.95, 0.97, 0.8, 0.85, 0.86, 0.9, 0.9, 0.1, 0.1, 0.1]
# patience 2, 2 restarts: no improvement at 2, 3 -> restart 1 at epoch 3 (back to epoch 1);
# improvement at 4; none at 5, 6 -> restart 2 at epoch 6 (back to epoch 4); none at 7, 8 -> stop
# at epoch 8 with epoch 4's weights. Epochs 9+ must never run.


def _run_script(schedule, local=None):
    rec = Recorder()
    gdr = GlobalDecayRestart(patience=2, global_decay=0.5, max_restarts=2, schedule=schedule)
    callbacks = ([local] if local else []) + [gdr, rec]
    model = TinyModule(lrs=(0.01, 0.04), val_losses=SCRIPT)
    trainer = make_trainer(callbacks, max_epochs=len(SCRIPT))
    trainer.fit(model, make_loader(), make_loader())
    return trainer, model, gdr, rec


@pytest.mark.parametrize(
    "schedule,rates",
    [
        # paper: x g at the 1st restart, x g^2 on top at the 2nd
        ("paper", [[0.005, 0.02], [0.00125, 0.005]]),
        # sample_cnn: lr0 * g^k
        ("sample_cnn", [[0.005, 0.02], [0.0025, 0.01]]),
    ],
)
def test_global_decay_restarts_restore_best_and_lower_rate(schedule, rates, capsys):
    trainer, model, gdr, rec = _run_script(schedule)
    assert sorted(rec.post) == list(range(9)), "training must stop at epoch 8"
    assert trainer.should_stop and gdr.stopped
    assert gdr.restarts == 2

    # before any restart the optimizer carries momentum; right after each restart it is empty
    for epoch in (0, 1, 2, 4, 5, 7):
        assert rec.post[epoch]["opt_state_len"] > 0
    for epoch, best, new in ((3, 1, rates[0]), (6, 4, rates[1])):
        assert rec.pre[epoch]["opt_state_len"] > 0
        assert rec.post[epoch]["opt_state_len"] == 0
        assert weights_equal(rec.post[epoch]["weights"], rec.pre[best]["weights"])
        assert not weights_equal(rec.pre[epoch]["weights"], rec.pre[best]["weights"])
        assert rec.post[epoch]["lr"] == pytest.approx(new, rel=1e-12)
        assert rec.post[epoch]["global_lr"] == pytest.approx(new, rel=1e-12)
    # the epochs after a restart train with the new rate (GlobalDecayRestart alone: constant)
    by_epoch = {}
    for epoch, lrs in rec.step_lrs:
        by_epoch.setdefault(epoch, lrs)
    assert by_epoch[3] == pytest.approx([0.01, 0.04])
    assert by_epoch[4] == pytest.approx(rates[0], rel=1e-12)
    assert by_epoch[7] == pytest.approx(rates[1], rel=1e-12)

    # stopped with the best weights (epoch 4, val 0.8) in the model
    final = {k: v.detach() for k, v in model.state_dict().items()}
    assert weights_equal(final, rec.pre[4]["weights"])
    assert gdr.best_epoch == 4 and gdr.best_score == pytest.approx(0.8)

    assert float(trainer.callback_metrics["train/restarts"]) == 2.0
    assert float(trainer.callback_metrics["train/global_lr"]) == pytest.approx(rates[1][0])
    err = capsys.readouterr().err  # progress messages: stderr
    assert "restart 1/2" in err and "restart 2/2" in err and "stopping" in err


def test_global_decay_paper_schedule_compounds():
    gdr = GlobalDecayRestart(global_decay=0.2, schedule="paper")
    lr, lr0 = 0.01, 0.01
    got = []
    for k in range(4):
        lr = gdr.new_rate(lr, lr0, k)
        got.append(lr)
    assert got == pytest.approx([0.01 * 0.2 ** (k * (k + 1) // 2) for k in range(1, 5)], rel=1e-12)
    sample = GlobalDecayRestart(global_decay=0.2, schedule="sample_cnn")
    assert [sample.new_rate(123.0, lr0, k) for k in range(4)] == pytest.approx(
        [0.01 * 0.2 ** k for k in range(1, 5)], rel=1e-12
    )


def test_global_and_local_decay_together_restart_from_new_global_lr():
    d = 0.05
    trainer, _, _, rec = _run_script("paper", local=LocalDecay(decay=d, formula="keras"))
    expected_epoch_start = {0: 0.01, 3: 0.01, 4: 0.005, 6: 0.005, 7: 0.00125}
    steps: dict[int, list[float]] = {}
    for epoch, lrs in rec.step_lrs:
        steps.setdefault(epoch, []).append(lrs[0])
    for epoch, lr0 in expected_epoch_start.items():
        want = [lr0 * keras_factor(n, d) for n in range(5)]
        assert steps[epoch] == pytest.approx(want, rel=1e-12), epoch


def test_global_decay_missing_monitor_is_a_clear_error():
    gdr = GlobalDecayRestart(monitor="val/auc")
    trainer = make_trainer([gdr], max_epochs=2)
    with pytest.raises(ConfigError) as info:
        trainer.fit(TinyModule(), make_loader(), make_loader())
    message = str(info.value)
    assert "val/auc" in message and "available keys" in message and "val/loss" in message


def test_global_decay_rejects_bad_settings():
    for kwargs, word in [
        ({"mode": "lowest"}, "mode"),
        ({"schedule": "cosine"}, "schedule"),
        ({"patience": 0}, "patience"),
        ({"global_decay": 0.0}, "global_decay"),
        ({"global_decay": 1.5}, "global_decay"),
        ({"max_restarts": -1}, "max_restarts"),
        ({"min_delta": -0.1}, "min_delta"),
    ]:
        with pytest.raises(ConfigError, match=word):
            GlobalDecayRestart(**kwargs)


def test_global_decay_mode_max_and_min_delta_and_nan():
    gdr = GlobalDecayRestart(mode="max", patience=1, min_delta=0.1)
    assert gdr.next_action(0.5) == "improve"
    gdr.best_score = 0.5
    assert gdr.next_action(0.55) == "restart"  # not better by more than min_delta
    assert gdr.next_action(0.61) == "improve"
    assert gdr.next_action(float("nan")) == "restart"  # NaN never improves


def test_global_decay_state_dict_round_trip_gives_same_decisions():
    _, _, done, _ = _run_script("paper")
    # a mid-run state: 1 restart done, waiting 1 after the best at epoch 4
    mid = GlobalDecayRestart(patience=2, global_decay=0.5, max_restarts=2)
    model = TinyModule(lrs=(0.01, 0.04), val_losses=SCRIPT)
    make_trainer([mid], max_epochs=6).fit(model, make_loader(), make_loader())
    assert (mid.restarts, mid.wait, mid.best_epoch) == (1, 1, 4)

    for source in (mid, done):
        buffer = io.BytesIO()
        torch.save(source.state_dict(), buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)  # Lightning's default when resuming
        copy = GlobalDecayRestart(patience=2, global_decay=0.5, max_restarts=2)
        copy.load_state_dict(state)
        for score in (0.5, 0.8, 0.85, 0.9, float("nan")):
            assert copy.next_action(score) == source.next_action(score)
        assert weights_equal(copy.best_weights, source.best_weights)
        assert copy.lr0 == source.lr0 == [0.01, 0.04]
    # a fresh callback decides differently, so the comparison above can fail
    fresh = GlobalDecayRestart(patience=2, global_decay=0.5, max_restarts=2)
    assert fresh.next_action(0.85) == "improve" and mid.next_action(0.85) == "restart"
    assert done.next_action(0.5) == "stop"


def _resumable_fit(ckpt_dir: Path, max_epochs: int, ckpt_path=None, seed=0, every_n_train_steps=None):
    """Fit with both decay callbacks, the RNG callback and a save_last ModelCheckpoint."""
    pl.seed_everything(seed, verbose=False)
    rec = Recorder()
    gdr = GlobalDecayRestart(patience=2, global_decay=0.5, max_restarts=2, verbose=False)
    ckpt = ModelCheckpoint(
        dirpath=ckpt_dir, save_last=True, save_top_k=0 if every_n_train_steps is None else -1,
        every_n_train_steps=every_n_train_steps,
    )
    model = TinyModule(lrs=(0.01, 0.04), val_losses=SCRIPT, dropout=0.3)
    trainer = make_trainer(
        [LocalDecay(decay=0.05, formula="paper"), gdr, RNGStateCheckpoint(), rec, ckpt],
        max_epochs=max_epochs,
        enable_checkpointing=True,
    )
    trainer.fit(model, make_loader(shuffle=True), make_loader(), ckpt_path=ckpt_path)
    return model, rec, gdr


@pytest.mark.parametrize("stop_after", [3, 5])
def test_resume_from_last_checkpoint_continues_exactly(tmp_path, stop_after):
    # stop_after=3: checkpoint written right after restart 1; 5: while waiting after a new best
    full_model, full, full_gdr = _resumable_fit(tmp_path / "full", max_epochs=len(SCRIPT))
    _, first, _ = _resumable_fit(tmp_path / "part", max_epochs=stop_after)
    model, second, gdr = _resumable_fit(
        tmp_path / "part", max_epochs=len(SCRIPT), ckpt_path=tmp_path / "part" / "last.ckpt", seed=99
    )
    assert first.step_lrs + second.step_lrs == full.step_lrs  # exact float equality
    assert len(full.step_lrs) == 9 * 5
    assert weights_equal(model.state_dict(), full_model.state_dict())
    assert (gdr.restarts, gdr.best_epoch, gdr.stopped) == (full_gdr.restarts, full_gdr.best_epoch, True)


def test_resume_mid_epoch_continues_local_counter(tmp_path):
    # checkpoint after global step 7 = step 2 of epoch 1
    _, full, _ = _resumable_fit(tmp_path / "full", max_epochs=3)
    _resumable_fit(tmp_path / "part", max_epochs=3, every_n_train_steps=7)
    ckpt = tmp_path / "part" / "epoch=1-step=7.ckpt"
    assert ckpt.exists(), sorted(p.name for p in (tmp_path / "part").iterdir())
    _, resumed, _ = _resumable_fit(tmp_path / "resumed", max_epochs=3, ckpt_path=ckpt, every_n_train_steps=7)
    assert resumed.step_lrs == full.step_lrs[7:]
    assert resumed.step_lrs[0][1][0] == pytest.approx(0.01 * paper_factor(2, 0.05), rel=1e-12)


# --------------------------------------------------------------------------- RNGStateCheckpoint


def test_rng_states_round_trip_through_weights_only_load():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    states = capture_rng_states()
    buffer = io.BytesIO()
    torch.save(states, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    first = (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist())
    restore_rng_states(loaded)
    again = (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist())
    assert first == again


def _dropout_fit(ckpt_dir: Path, max_epochs: int, with_rng: bool, ckpt_path=None, seed=0):
    pl.seed_everything(seed, verbose=False)
    model = TinyModule(dropout=0.5)
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0)]
    if with_rng:
        callbacks.insert(0, RNGStateCheckpoint())
    trainer = make_trainer(callbacks, max_epochs=max_epochs, enable_checkpointing=True)
    trainer.fit(model, make_loader(shuffle=True), make_loader(), ckpt_path=ckpt_path)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("with_rng", [True, False])
def test_rng_checkpoint_makes_resume_draw_the_same_random_stream(tmp_path, with_rng):
    full = _dropout_fit(tmp_path / "full", 4, with_rng)
    _dropout_fit(tmp_path / "part", 2, with_rng)
    resumed = _dropout_fit(tmp_path / "part", 4, with_rng, ckpt_path=tmp_path / "part" / "last.ckpt", seed=7)
    # without the callback the resumed run draws other shuffles and dropout masks
    assert weights_equal(full, resumed) is with_rng


# ------------------------------------------------------------------------------------ DDP


class RankRecorder(Callback):
    """Writes, per rank, ``(epoch, global_lr of group 0)`` after every validation decision."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.history: list[list] = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            lr = trainer.optimizers[0].param_groups[0][GLOBAL_LR_KEY]
            self.history.append([trainer.current_epoch, lr])

    def on_train_end(self, trainer, pl_module):
        path = Path(self.out_dir) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.history))


DDP_SCRIPT = [1.0, 0.9, 0.95, 0.97, 0.98, 0.99, 0.99, 0.99]


class UnsyncedRanks(TinyModule):
    """Rank 0 logs DDP_SCRIPT; rank 1 logs an unsynced value that improves every epoch."""

    def on_validation_epoch_end(self):
        epoch = self.current_epoch
        value = DDP_SCRIPT[epoch] if self.global_rank == 0 else 1.0 - 0.1 * epoch
        self.log("val/loss", float(value))


class LeaveTogether(Callback):
    """The suite's end-of-run step: every rank waits for the others, then leaves the process group."""

    def on_fit_end(self, trainer, pl_module):
        close_process_group()


@pytest.mark.slow
def test_ddp_ranks_follow_rank_zero_decision(tmp_path):
    # rank 0: best at 1, none at 2, 3 -> restart at 3; none at 4, 5 -> stop at 5 (max_restarts=1).
    # rank 1 alone would never restart; both ranks must act on rank 0's decision together.
    gdr = GlobalDecayRestart(patience=2, global_decay=0.5, max_restarts=1, verbose=False)
    trainer = pl.Trainer(
        max_epochs=len(DDP_SCRIPT),
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[gdr, RankRecorder(str(tmp_path)), LeaveTogether()],
    )
    trainer.fit(UnsyncedRanks(), make_loader(), make_loader())
    histories = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    want = [[0, 0.01], [1, 0.01], [2, 0.01], [3, 0.005], [4, 0.005], [5, 0.005]]
    for history in histories:
        assert [epoch for epoch, _ in history] == [epoch for epoch, _ in want]
        assert [lr for _, lr in history] == pytest.approx([lr for _, lr in want], rel=1e-12)
