"""W&B logging: mode choice, offline fallback, what a run writes (metrics, config, table, images), restart events.

Everything runs offline: W&B's folders point into tmp, no credentials are visible, and the one
"online" start talks to a local fake server that refuses the key. What was logged is read back
from the offline run's `.wandb` file (wandb 0.31 ships no reader for it; the small one below
follows its documented LevelDB-log layout and decodes records with wandb's own protobufs).
"""

import http.server
import json
import socket
import threading
import time

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import run
from callbacks.history import TrainingHistory, read_history
from callbacks.lr_decay import GlobalDecayRestart
from experiments.options import RunOptions
from experiments.reporting import loggers
from tests.support.helpers import TINY_MEL_ARGS, read_metrics, tiny_data_args
from tests.support.wandb_records import read_offline_run, values


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """No credentials, W&B's own folders in tmp."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(name, raising=False)
    for name, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / sub))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


# ------------------------------------------------------------------------------------------
# Reading an offline run
# ------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------
# Mode choice
# ------------------------------------------------------------------------------------------
def test_credentials_come_from_the_environment_or_netrc(tmp_path):
    netrc = tmp_path / "netrc"
    env = {"NETRC": str(netrc)}
    assert not loggers.has_wandb_credentials(env)
    assert loggers.has_wandb_credentials({**env, "WANDB_API_KEY": "k" * 40})
    netrc.write_text("machine example.org login user password secret\n")
    assert not loggers.has_wandb_credentials(env)
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert loggers.has_wandb_credentials(env)
    assert not loggers.has_wandb_credentials({**env, "WANDB_BASE_URL": "https://wandb.mycompany.org"})
    netrc.write_text("machine api.wandb.ai login\n")  # malformed
    assert not loggers.has_wandb_credentials(env)


def test_mode_is_online_only_when_logged_in_and_reachable(tmp_path):
    key = {"WANDB_API_KEY": "k" * 40, "NETRC": str(tmp_path / "none")}
    assert loggers.choose_wandb_mode(key, probe=lambda url: True).mode == "online"
    unreachable = loggers.choose_wandb_mode(key, probe=lambda url: False)
    assert unreachable.mode == "offline" and "cannot be reached" in unreachable.reason
    nobody = loggers.choose_wandb_mode({"NETRC": str(tmp_path / "none")}, probe=lambda url: pytest.fail("probed"))
    assert nobody.mode == "offline" and "not logged in" in nobody.reason
    assert loggers.choose_wandb_mode({**key, "WANDB_MODE": "offline"}, probe=lambda url: True).mode == "offline"
    assert loggers.choose_wandb_mode({**key, "WANDB_MODE": "disabled"}, probe=lambda url: True).mode == "disabled"


def test_host_probe_answers_quickly_both_ways():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert loggers.host_reachable(f"http://127.0.0.1:{port}")
    assert not loggers.host_reachable(f"http://127.0.0.1:{port}", timeout_s=1)  # closed now: refused
    assert not loggers.host_reachable("not a url")


class _RefusingWandbServer(http.server.BaseHTTPRequestHandler):
    def _refuse(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"errors": [{"message": "invalid API key"}]}')

    do_GET = do_POST = _refuse

    def log_message(self, *args):
        pass


def test_failed_online_start_falls_back_to_offline(tmp_path, monkeypatch, capsys):
    import wandb

    # A W&B session an earlier test started in this process keeps the environment it began with (wandb warns
    # "Changes to your `wandb` environment variables will be ignored"): without a fresh one the start below
    # would go to the default host, not to this server (and wait ~10 s for its DNS lookup to fail).
    wandb.teardown()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingWandbServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        # wandb retries the refused start until its init timeout (60 s in runs): 2 s here fails the same way
        monkeypatch.setattr(loggers, "INIT_TIMEOUT_S", 2.0)
        run_dir = tmp_path / "run"
        logger = loggers.build_logger(RunOptions(logger="wandb"), run_dir, config={"model": "x"})
        assert logger.experiment.settings.mode == "offline"
        logger.log_metrics({"some/metric": 1.5}, step=0)
        command = loggers.finish_logger(logger)
    finally:
        server.shutdown()
    captured = capsys.readouterr()
    assert "online start failed" in captured.err and "logging offline" in captured.err
    assert "invalid API key" in captured.err  # this server's answer: the start went where WANDB_BASE_URL points
    run_id = (run_dir / loggers.RUN_ID_FILE).read_text().strip()
    (folder,) = loggers.offline_run_dirs(run_dir, run_id)
    assert command == f"wandb sync {folder}" and command in captured.err
    logged = read_offline_run(folder)
    assert values(logged["history"], "some/metric") == [1.5] and logged["config"]["model"] == "x"


def test_sweep_trials_are_separate_grouped_runs_and_a_resume_continues_its_run(tmp_path):
    import os

    first = loggers.build_logger(RunOptions(logger="wandb", wandb_group="study-a"), tmp_path / "trial0", config={"lr": 0.1})
    run0 = first.experiment
    assert (run0.group, run0.job_type, run0.settings.mode) == ("study-a", "sweep-trial", "offline")
    loggers.finish_logger(first)
    second = loggers.build_logger(RunOptions(logger="wandb", wandb_group="study-a"), tmp_path / "trial1")
    assert second.experiment.id != run0.id and second.experiment.group == "study-a"
    loggers.finish_logger(second)
    assert "WANDB_MODE" not in os.environ  # the mode was set per run, not for the process

    time.sleep(1.1)  # offline folders are named by the second they start in
    again = loggers.build_logger(RunOptions(logger="wandb"), tmp_path / "trial0")
    assert again.experiment.id == run0.id
    command = loggers.finish_logger(again)
    folders = loggers.offline_run_dirs(tmp_path / "trial0", run0.id)
    assert len(folders) == 2 and command == "wandb sync " + " ".join(map(str, folders))


def test_csv_tensorboard_and_none_loggers(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    assert isinstance(loggers.build_logger(RunOptions(logger="csv"), tmp_path), CSVLogger)
    assert isinstance(loggers.build_logger(RunOptions(logger="tensorboard"), tmp_path), TensorBoardLogger)
    assert loggers.build_logger(RunOptions(logger="none"), tmp_path) is False
    assert loggers.finish_logger(False) is None
    assert run.parse_options(["--model", "mel_cnn"]).logger == "wandb"


# ------------------------------------------------------------------------------------------
# History and restart events
# ------------------------------------------------------------------------------------------
VAL_LOSSES = [1.0, 0.8, 0.9, 0.7, 0.75, 0.6]  # no improvement at epochs 2 and 4: restarts (patience 1)


class _Scripted(pl.LightningModule):
    """Validation loss follows VAL_LOSSES; training is a real (tiny) regression."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x).squeeze(1), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log("val/loss", VAL_LOSSES[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path, epochs, logger, ckpt_path=None):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 4), torch.randn(32))
    history = TrainingHistory(tmp_path / "history.csv")
    trainer = pl.Trainer(
        max_epochs=epochs, logger=logger, enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=1, num_sanity_val_steps=0,
        callbacks=[GlobalDecayRestart(monitor="val/loss", patience=1, max_restarts=3, verbose=False), history,
                   ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)])
    trainer.fit(_Scripted(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=8), ckpt_path=ckpt_path)
    return history, trainer


def test_history_records_restarts_and_resume_keeps_earlier_epochs(tmp_path):
    _fit(tmp_path / "a", 6, False)
    full = read_history(tmp_path / "a" / "history.csv")
    assert [row["epoch"] for row in full] == list(range(6))
    assert [row["restart"] for row in full] == [0, 0, 1, 0, 1, 0]
    assert [row["restarts"] for row in full] == [0, 0, 1, 1, 2, 2]
    assert [row["val_loss"] for row in full] == pytest.approx(VAL_LOSSES)
    # paper schedule: the first restart multiplies the rate by 0.2, the second by 0.2^2
    assert [row["lr_start"] for row in full] == pytest.approx([0.1, 0.1, 0.1, 0.02, 0.02, 0.0008])
    assert all(row["train_loss"] > 0 and row["global_step"] == 4 * (row["epoch"] + 1) for row in full)

    _fit(tmp_path / "b", 3, False)  # interrupted after 3 epochs, then resumed
    history, _ = _fit(tmp_path / "b", 6, False, ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt"))
    resumed = read_history(tmp_path / "b" / "history.csv")
    assert len(history.rows) == 6
    for got, want in zip(resumed, full):
        assert {k: v for k, v in got.items() if k != "train_loss"} == pytest.approx(
            {k: v for k, v in want.items() if k != "train_loss"})


def test_restarts_and_learning_rate_reach_wandb(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), project="test", mode="offline", id="restarts1")
    _, trainer = _fit(tmp_path, 6, logger)
    loggers.finish_logger(logger)
    (folder,) = loggers.offline_run_dirs(tmp_path, "restarts1")
    history = read_offline_run(folder)["history"]
    assert values(history, "events/restart") == [1, 2]
    assert values(history, "events/restart_epoch") == [2, 4]
    assert values(history, "events/restart_lr") == pytest.approx([0.02, 0.0008])
    # no LocalDecay in this trainer: the history callback logs the rate of every step
    lrs = values(history, "train/lr")
    assert len(lrs) == trainer.global_step == 24 and lrs[12] == pytest.approx(0.02)


# ------------------------------------------------------------------------------------------
# A whole run
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_default_run_logs_everything_offline(cache_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    data = tiny_data_args(cache_dir, clips=120, figures=True, mel_backend=None)  # the default nnAudio
    code = run.main(["--model", "mel_cnn", *data, *TINY_MEL_ARGS["mel_cnn"], "--max-epochs", "2",
                     "--log-every-n-steps", "2", "--run-dir", str(run_dir)])  # no --logger: W&B, offline without login
    out, err = capsys.readouterr()
    assert code == 0
    run_id = (run_dir / loggers.RUN_ID_FILE).read_text().strip()
    (folder,) = loggers.offline_run_dirs(run_dir, run_id)
    # one line on stderr names the sync command; no wandb banner, run summary or history sparklines
    assert f"W&B: logged offline; upload with: wandb sync {folder}\n" in err and (out + err).count("wandb sync") == 1
    assert "wandb:" not in out + err and "Run history" not in out + err
    logged = read_offline_run(folder)
    history, config = logged["history"], logged["config"]
    metrics = read_metrics(run_dir)
    tags = metrics["test"]["tag_names"]
    steps = max(values(history, "trainer/global_step"))

    # every 2nd step (--log-every-n-steps 2): training loss and learning rate; every epoch: validation loss and AUCs
    counts = (len(values(history, "train/loss_step")), len(values(history, "train/lr")), steps // 2)
    assert counts[0] == counts[1] == counts[2] > 0, counts
    assert len(values(history, "val/roc_auc")) == len(values(history, "val/pr_auc")) == 2
    assert values(history, "test/roc_auc") == pytest.approx([metrics["roc_auc"]])
    # the full configuration
    assert config["model"] == "mel_cnn" and config["max_epochs"] == 2
    assert config["resolved"]["tags"] == tags and config["resolved"]["network"]["class"] == "MelCNN"
    # the per-tag table
    (table_entry,) = values(history, "test/per_tag")
    table = json.loads((folder / "files" / table_entry["path"]).read_text())
    assert table["columns"][:4] == ["tag", "positives", "roc_auc", "pr_auc"]
    assert [row[0] for row in table["data"]] == tags
    roc = {row[0]: row[2] for row in table["data"]}
    assert all(roc[t] == pytest.approx(v) for t, v in zip(tags, metrics["test"]["per_tag_roc_auc"]) if v is not None)
    # the figures, in the run folder and as W&B images
    for name in ("tag_distribution", "loss", "threshold", "roc", "mel_example"):
        (image,) = values(history, f"figures/{name}")
        assert (folder / "files" / image["filenames"][0]).is_file()
    assert len(list((run_dir / "figures").glob("*.png"))) == 5
    assert len(read_history(run_dir / "history.csv")) == 2
