"""Crash-safe training: a run killed with SIGKILL mid-training resumes to exactly the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import run
from tests.helpers import TINY_MEL_ARGS, read_metrics, tiny_data_args

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 5


def _command(cache_dir: Path, run_dir: Path) -> list[str]:
    # patience 1 makes global-decay restarts happen inside five epochs, so their state must resume too
    return [sys.executable, str(REPO / "run.py"), "--model", "mel_cnn", *tiny_data_args(cache_dir),
            *TINY_MEL_ARGS["mel_cnn"], "--max-epochs", str(EPOCHS), "--lr", "0.05", "--patience", "1",
            "--max-restarts", "3", "--deterministic", "--logger", "csv", "--run-dir", str(run_dir)]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path):
    cache_dir = tmp_path / "cache"
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_command(cache_dir, whole), check=True, env=_env(), capture_output=True, timeout=600)

    process = subprocess.Popen(_command(cache_dir, killed), env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.is_file():  # the first epoch's checkpoint: we are now in epoch 1
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "metrics.json").exists()

    rerun = subprocess.run(_command(cache_dir, killed), env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Restoring states from the checkpoint" in rerun.stderr + rerun.stdout

    expected, got = read_metrics(whole), read_metrics(killed)
    assert got["test"] == expected["test"]  # every per-tag AUC, TPR and FPR, exactly
    assert got["thresholds"] == expected["thresholds"]
    assert got["epochs"] == expected["epochs"]
    assert Path(got["best_checkpoint"]).name == Path(expected["best_checkpoint"]).name


@pytest.mark.slow
def test_rerunning_a_finished_run_changes_nothing(tmp_path, capsys):
    args = ["--model", "mel_cnn", *tiny_data_args(tmp_path / "cache", clips=64), *TINY_MEL_ARGS["mel_cnn"],
            "--max-epochs", "1", "--logger", "none", "--run-dir", str(tmp_path / "run")]
    assert run.main(args) == 0
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    capsys.readouterr()
    assert run.main(args) == 0
    assert "already holds this finished run" in capsys.readouterr().out
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before
    # the same folder with other settings is refused, not mixed
    assert run.main([*args, "--lr", "0.5"]) == 2
    assert "other settings (lr)" in capsys.readouterr().err


@pytest.mark.slow
def test_resuming_on_another_number_of_processes_warns(tmp_path, capsys):
    """A job requeued on fewer GPUs may resume its run folder, but the global batch changes: it says so."""
    run_dir = tmp_path / "run"
    args = ["--model", "mel_cnn", *tiny_data_args(tmp_path / "cache", clips=64), *TINY_MEL_ARGS["mel_cnn"],
            "--max-epochs", "1", "--logger", "none", "--run-dir", str(run_dir)]
    assert run.main(args) == 0
    config_path = run_dir / "config.json"
    config = json.loads(config_path.read_text())
    assert config["resolved"]["processes"] == 1
    assert config["resolved"]["global_batch_size"] == config["resolved"]["batch_size"]
    # As if it had trained on 4 processes and was killed before testing: the last checkpoint is kept.
    config["resolved"]["processes"], config["resolved"]["global_batch_size"] = 4, 4 * config["resolved"]["batch_size"]
    config_path.write_text(json.dumps(config))
    (run_dir / "metrics.json").unlink()
    capsys.readouterr()
    assert run.main(args) == 0
    err = capsys.readouterr().err
    assert f"trained with 4 process(es) (global batch {4 * config['resolved']['batch_size']})" in err
    assert f"resumes with 1 (global batch {config['resolved']['batch_size']})" in err
    # the same number of processes: no warning
    (run_dir / "metrics.json").unlink()
    assert run.main(args) == 0
    assert "process(es)" not in capsys.readouterr().err
