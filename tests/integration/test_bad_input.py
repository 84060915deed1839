"""Bad input, end to end: every problem the user can fix ends with one line on stderr and exit code 2.

Each case runs `run.main([...])` (a few also `python run.py` in a subprocess, to see the real
stderr) and checks that the one `error:` line names the file or option and the problem, that no
traceback is printed, and that nothing prepared before the failure (the waveform cache, earlier
run folders, the last checkpoint) is changed or lost.

The data are the tiny synthetic dataset of `tests/support/helpers.py` (120 clips of 3.7 s), kept in a
cache folder shared with the other test files of the session; one `mel_cnn` run of one epoch
provides the checkpoint the checkpoint cases need.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.utils.data import DataLoader, Dataset

import run
from datamodules.datamodule import MTATDataModule
from datamodules.datasets.mtat.standin import synthetic_dir_name
from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError, DataError
from lightning_modules.registry import model_spec
from lightning_modules.tagging_module import TaggingModule
from tests.support.helpers import TINY_CLIP_SAMPLES, TINY_MEL_ARGS, read_metrics, tiny_data_args
from tests.support.paths import REPO_ROOT

CLIPS = 120
MEL = TINY_MEL_ARGS["mel_cnn"]
LAYOUT = {"segment_samples": 1, "segments_per_clip": 1}


def data_args(cache_dir: Path) -> list[str]:
    return tiny_data_args(cache_dir, clips=CLIPS)


@pytest.fixture(scope="session")
def synthetic_data(cache_dir, mel_cnn_run) -> Path:
    return cache_dir / synthetic_dir_name(CLIPS, TINY_CLIP_SAMPLES, 0)


def fail(argv: list[str], capsys) -> str:
    """Run `run.main(argv)`, expect exit code 2 and exactly one error line (no traceback); return that line."""
    capsys.readouterr()
    code = run.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert err.rstrip().splitlines()[-1] == errors[0]  # the last word on stderr
    return errors[0]


def usage_error(argv: list[str], capsys) -> str:
    """argparse rejects argv: exit code 2, one line on stderr; return it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def run_script(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), *argv], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Size and SHA-1 of every file under `folder` (relative path -> (size, digest))."""
    return {str(p.relative_to(folder)): (p.stat().st_size, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in (".lock", ".prepare.lock")}


def mtat_folder(root: Path, synthetic_data: Path, annotations: str | None, mp3: bool = True) -> Path:
    """An MTAT-layout folder: the synthetic MP3s (linked) and the given annotations text (None: no file)."""
    root.mkdir(parents=True)
    if mp3:
        (root / "mp3").symlink_to(synthetic_data / "mp3", target_is_directory=True)
    if annotations is not None:
        (root / "annotations_final.csv").write_bytes(annotations.encode())
    return root


def annotations_text(synthetic_data: Path) -> str:
    return (synthetic_data / "annotations_final.csv").read_bytes().decode()


# ---------------------------------------------------------------------------------------------- the data
def test_missing_annotations_file(synthetic_data, cache_dir, tmp_path, capsys):
    data = mtat_folder(tmp_path / "mtat", synthetic_data, annotations=None)
    line = fail(["--model", "mel_cnn", *data_args(cache_dir), "--data", str(data), *MEL,
                 "--run-dir", str(tmp_path / "run")], capsys)
    assert str(data / "annotations_final.csv") in line and "not found" in line
    assert not (tmp_path / "run").exists()


def test_missing_mp3_folder(synthetic_data, cache_dir, tmp_path, capsys):
    data = mtat_folder(tmp_path / "mtat", synthetic_data, annotations_text(synthetic_data), mp3=False)
    line = fail(["--model", "mel_cnn", *data_args(cache_dir), "--data", str(data), *MEL,
                 "--run-dir", str(tmp_path / "run")], capsys)
    assert str(data) in line and "no MP3 folders" in line
    assert not (tmp_path / "run").exists()


def _drop_last_field(lines: list[str], number: int) -> None:
    lines[number - 1] = lines[number - 1].rsplit("\t", 1)[0]


def _label_two(lines: list[str], number: int) -> None:
    fields = lines[number - 1].split("\t")
    fields[1] = '"2"'  # column 2: the first tag column (column 1 is clip_id)
    lines[number - 1] = "\t".join(fields)


@pytest.mark.parametrize("damage, expected", [
    (_drop_last_field, "line 4 has"),
    (_label_two, "line 4, column 2"),
], ids=["wrong-field-count", "label-not-0-or-1"])
def test_malformed_annotations(damage, expected, synthetic_data, cache_dir, tmp_path, capsys):
    lines = annotations_text(synthetic_data).split("\r\n")
    damage(lines, 4)
    data = mtat_folder(tmp_path / "mtat", synthetic_data, "\r\n".join(lines))
    line = fail(["--model", "mel_cnn", *data_args(cache_dir), "--data", str(data), *MEL,
                 "--run-dir", str(tmp_path / "run")], capsys)
    assert str(data / "annotations_final.csv") in line and expected in line
    if damage is _label_two:
        assert "'2' is not 0 or 1" in line


def test_unknown_split_or_vocabulary_name(cache_dir, capsys):
    line = usage_error(["--model", "mel_cnn", "--split", "random"], capsys)
    assert "--split" in line and "invalid choice: 'random'" in line and "folder" in line
    line = usage_error(["--model", "mel_cnn", "--tags", "top50"], capsys)
    assert "--tags" in line and "invalid choice: 'top50'" in line
    # The data module checks the names itself when used from Python, before any work.
    with pytest.raises(ConfigError, match="unknown split 'random'.*folder, clean"):
        MTATDataModule("synthetic", str(cache_dir), split="random", layout=LAYOUT)
    with pytest.raises(ConfigError, match="unknown tag vocabulary 'top50'.*paper, standard"):
        MTATDataModule("synthetic", str(cache_dir), vocabulary="top50", layout=LAYOUT)


def test_clean_split_on_synthetic_data(mel_cnn_run, cache_dir, tmp_path, capsys):
    line = fail(["--model", "mel_cnn", *data_args(cache_dir), *MEL, "--split", "clean",
                 "--run-dir", str(tmp_path / "run")], capsys)
    assert "split 'clean'" in line and "real MagnaTagATune" in line and "'folder'" in line
    assert not (tmp_path / "run").exists()  # refused while preparing the data, before the run folder


def test_unwritable_cache_folder(tmp_path, capsys):
    """--cache-dir under a regular file cannot be created, whoever runs the test (root included)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cache = blocker / "cache"
    line = fail(["--model", "mel_cnn", *data_args(cache), *MEL, "--run-dir", str(tmp_path / "run")], capsys)
    assert str(cache) in line and "--cache-dir" in line and "not writable" in line
    # The data module says the same when used from Python.
    with pytest.raises(DataError, match="not writable"):
        MTATDataModule("synthetic", str(cache), layout=LAYOUT, progress=False).prepare_data()
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores permission bits; test_unwritable_cache_folder covers root")
def test_read_only_cache_folder(tmp_path, capsys):
    cache = tmp_path / "read-only"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        line = fail(["--model", "mel_cnn", *data_args(cache), *MEL, "--run-dir", str(tmp_path / "run")], capsys)
    finally:
        cache.chmod(0o700)
    assert str(cache) in line and "not writable" in line


@pytest.mark.slow
def test_script_prints_one_line_without_traceback(tmp_path):
    """The real process: stderr ends in the one error line, with no traceback anywhere, exit code 2."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_script(["--model", "mel_cnn", *data_args(blocker / "cache"), *MEL, "--run-dir", str(tmp_path / "r")])
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cache folder"), result.stderr[-3000:]

    result = run_script(["--model", "resnet50"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'resnet50'" in lines[0], result.stderr


# ---------------------------------------------------------------------------------------------- models and checkpoints
def test_unknown_model_name(capsys):
    line = usage_error(["--model", "resnet50"], capsys)
    assert "argument --model: unknown model 'resnet50'" in line and "mel_cnn" in line
    assert "did you mean mel_cnn?" in usage_error(["--model", "mel_cn"], capsys)
    with pytest.raises(ConfigError, match=r"unknown model 'resnet50' \(known: .*mel_cnn"):
        model_spec("resnet50")
    with pytest.raises(ConfigError, match=r"unknown model 'mel_cn'; did you mean mel_cnn\? \(known: "):
        model_spec("mel_cn")


def test_evaluate_with_another_model(mel_cnn_run, capsys):
    line = fail(["--evaluate", str(mel_cnn_run), "--model", "lstm_mel"], capsys)
    assert "--model lstm_mel" in line and "(mel_cnn)" in line
    assert not (mel_cnn_run / "evaluations").exists()


def test_evaluate_with_another_tag_list(mel_cnn_run, capsys):
    line = fail(["--evaluate", str(mel_cnn_run), "--tags", "standard"], capsys)
    assert "was trained on" in line and "--tags" in line
    assert not (mel_cnn_run / "evaluations").exists()


def test_tag_with_another_model(mel_cnn_run, synthetic_data, capsys):
    song = next((synthetic_data / "mp3").rglob("*.mp3"))
    line = fail(["--tag", str(song), "--checkpoint", str(mel_cnn_run), "--model", "sample_cnn"], capsys)
    assert "--model sample_cnn" in line and "(mel_cnn)" in line


def test_truncated_garbage_and_foreign_checkpoints(mel_cnn_run, synthetic_data, cache_dir, tmp_path, capsys):
    last = mel_cnn_run / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[:4096])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a checkpoint\n" * 100)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    song = next((synthetic_data / "mp3").rglob("*.mp3"))
    for path, expected in ((truncated, "not a readable checkpoint"), (garbage, "not a readable checkpoint"),
                           (foreign, "not a checkpoint of this suite")):
        line = fail(["--evaluate", str(path), *data_args(cache_dir)], capsys)
        assert str(path) in line and expected in line
        line = fail(["--tag", str(song), "--checkpoint", str(path)], capsys)
        assert str(path) in line and expected in line
    assert not list(tmp_path.glob("*-evaluation"))


def test_mel_settings_with_too_few_frames(mel_cnn_run, cache_dir, tmp_path, capsys):
    line = fail(["--model", "mel_cnn", *data_args(cache_dir), "--hop-length", "4096",
                 "--run-dir", str(tmp_path / "run")], capsys)
    assert "frames" in line and "mel_cnn" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--model", "harmonic_cnn"], "segments of 80000 samples do not fit in this dataset's clips of 59049 samples"),
    (["--model", "mel_cnn", "--hop-length", "300000"], "leaves 1 Mel frame(s) per segment"),
    (["--model", "mel_cnn", "--hop-length", "4096"], "mel_cnn"),
])
def test_segments_that_cannot_fit_the_clips_fail_before_any_data(argv, expected, tmp_path, capsys):
    cache = tmp_path / "cache"  # a check after the data would first generate and decode the clips here
    line = fail([*argv, *tiny_data_args(cache, clips=48, clip_samples=59_049), "--run-dir", str(tmp_path / "run")],
                capsys)
    assert expected in line and not cache.exists() and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- failures keep what exists
def test_failures_keep_the_cache_and_earlier_runs(mel_cnn_run, synthetic_data, cache_dir, tmp_path, capsys):
    waveforms = cache_dir / "waveforms"
    before = {"run": snapshot(mel_cnn_run), "cache": snapshot(waveforms), "data": snapshot(synthetic_data)}
    assert any(name.endswith("manifest.json") for name in before["cache"])
    config = {k: v for k, v in json.loads((mel_cnn_run / "config.json").read_text()).items() if k != "resolved"}
    # The trained run's folder with other settings: refused, not overwritten.
    line = fail(["--model", "mel_cnn", *data_args(cache_dir), *MEL, "--max-epochs", "1", "--limit-train-batches",
                 "2", "--logger", "none", "--lr", str(config["lr"] * 2), "--run-dir", str(mel_cnn_run)], capsys)
    assert str(mel_cnn_run) in line
    # Options that fail after the cache is ready, and an evaluation that fails.
    fail(["--model", "mel_cnn", *data_args(cache_dir), "--hop-length", "4096", "--run-dir", str(tmp_path / "a")],
         capsys)
    fail(["--model", "mel_cnn", *data_args(cache_dir), *MEL, "--split", "clean", "--run-dir", str(tmp_path / "b")],
         capsys)
    fail(["--evaluate", str(mel_cnn_run), "--tags", "standard"], capsys)
    after = {"run": snapshot(mel_cnn_run), "cache": snapshot(waveforms), "data": snapshot(synthetic_data)}
    assert after == before
    assert read_metrics(mel_cnn_run)["best_checkpoint"]


# ---------------------------------------------------------------------------------------------- non-finite loss
def _nan_logits_at(monkeypatch, bad_batches: set[int]) -> None:
    """Make the network's logits NaN on the given training batches (counted from 1 over the whole run)."""
    original = TaggingModule.forward
    seen = [0]

    def forward(self, model_input):
        logits = original(self, model_input)
        if self.training:
            seen[0] += 1
            if seen[0] in bad_batches:
                logits = logits * float("nan")
        return logits

    monkeypatch.setattr(TaggingModule, "forward", forward)


@pytest.mark.slow
def test_nonfinite_loss_stops_naming_the_step_and_last_checkpoint(mel_cnn_run, cache_dir, tmp_path, monkeypatch,
                                                                  capsys):
    _nan_logits_at(monkeypatch, {4})  # epoch 1, batch 1: global step 3 (two batches per epoch)
    run_dir = tmp_path / "run"
    line = fail(["--model", "mel_cnn", *data_args(cache_dir), *MEL, "--max-epochs", "3", "--limit-train-batches", "2",
                 "--logger", "csv", "--run-dir", str(run_dir)], capsys)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert "training loss is nan at global step 3 (epoch 1, batch 1)" in line
    assert f"last good checkpoint: {last}" in line and "--nonfinite-loss skip" in line
    # The checkpoint it names is intact: end of epoch 0, finite weights; the run is not marked finished.
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["epoch"] == 0 and saved["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.slow
def test_nonfinite_loss_skip_drops_the_batch_and_finishes(mel_cnn_run, cache_dir, tmp_path, monkeypatch, capsys):
    _nan_logits_at(monkeypatch, {2, 3})  # epoch 0 batch 1, epoch 1 batch 0
    updated = []  # per training batch: did the weights change?

    def before(self, batch, batch_idx):
        self._test_weights = [p.detach().clone() for p in self.parameters()]

    def after(self, outputs, batch, batch_idx):
        updated.append(any(not torch.equal(a, p) for a, p in zip(self._test_weights, self.parameters())))

    monkeypatch.setattr(TaggingModule, "on_train_batch_start", before, raising=False)
    monkeypatch.setattr(TaggingModule, "on_train_batch_end", after, raising=False)
    run_dir = tmp_path / "run"
    code = run.main(["--model", "mel_cnn", *data_args(cache_dir), *MEL, "--max-epochs", "2",
                     "--limit-train-batches", "2", "--nonfinite-loss", "skip", "--logger", "csv",
                     "--log-every-n-steps", "1", "--run-dir", str(run_dir)])
    assert code == 0, capsys.readouterr().err[-3000:]
    # The NaN batches changed nothing (no gradient step, no momentum); the batch after them trained again.
    assert updated == [True, False, False, True]
    metrics = read_metrics(run_dir)
    assert math.isfinite(metrics["roc_auc"])
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    logged = pd.read_csv(run_dir / "logs" / "metrics.csv")
    skipped = logged[["step", "train/skipped_batches"]].dropna()  # Lightning repeats a step value in later rows
    assert skipped.groupby("train/skipped_batches")["step"].min().to_dict() == {1.0: 1, 2.0: 2}
    history = pd.read_csv(run_dir / "history.csv")
    assert history["train_loss"].notna().all() and history["train_loss"].map(math.isfinite).all()


class _NaNOnRank1(nn.Module):
    """A linear tagger whose logits are NaN on the second training batch of DDP rank 1 only."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 2)
        self.calls = 0

    def forward(self, x):
        logits = self.linear(x)
        if self.training:
            self.calls += 1
            if torch.distributed.is_initialized() and torch.distributed.get_rank() == 1 and self.calls == 2:
                logits = logits * float("nan")
        return logits


def _fit_two_processes(action: str) -> pl.Trainer:
    torch.manual_seed(0)
    items = [{"input": torch.randn(8), "target": torch.randint(0, 2, (2,)).float(), "clip": torch.tensor(i),
              "segment": torch.tensor(0)} for i in range(16)]
    module = TaggingModule(_NaNOnRank1(), {"name": "test"}, ["a", "b"], None,
                           {"segment_samples": 8, "segments_per_clip": 1}, SAMPLE_RATE, nonfinite_loss=action)
    # fork: the processes share this test's code; a short timeout turns a rank left waiting into a failure
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(start_method="fork",
                                                                            timeout=timedelta(seconds=60)),
                         max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(items, batch_size=2))
    return trainer


def test_nonfinite_loss_on_one_ddp_process_is_handled_by_all():
    """A NaN on one rank: every rank skips the batch (Lightning refuses a None step under DDP) or every rank stops."""
    trainer = _fit_two_processes("skip")
    assert float(trainer.callback_metrics["train/skipped_batches"]) == 1.0  # rank 0 skipped it too
    # Each rank raises (rank 0: "another process's training loss is not finite"); the launcher reports one of them.
    with pytest.raises(Exception, match=r"NonFiniteLossError: (training loss is nan|another process's training loss "
                                        r"is not finite) at global step 1 \(epoch 0, batch 1\)"):
        _fit_two_processes("stop")


# ---------------------------------------------------------------------------------------------- errors from loader workers
class _BrokenDataset(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index):
        raise DataError("waveform cache /somewhere: row 3 is not servable (status missing)")


def test_error_from_a_loader_worker_prints_one_line():
    """A DataLoader worker re-raises its dataset's DataError with the worker's traceback in the message."""
    loader = DataLoader(_BrokenDataset(), batch_size=2, num_workers=1)
    with pytest.raises(DataError) as caught:
        next(iter(loader))
    assert "Traceback" in str(caught.value)  # what torch does; run.py must not print it
    assert run._one_line(caught.value) == "waveform cache /somewhere: row 3 is not servable (status missing)"
    assert run._one_line(DataError("plain\nmessage")) == "plain message"
