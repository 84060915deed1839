"""Crash-safe training at the defaults a user runs: a killed run resumes to exactly the uninterrupted result.

The training processes here run as a user runs them: default torch threads and loader workers (no
OMP_NUM_THREADS, no --num-workers), no --deterministic, no PYTHONHASHSEED. Each recipe's run is
SIGKILLed early in its last epoch and resumed (the paper's run is killed in the middle of a validation
first, resumed, and killed again there: a mechanism shared by every recipe, tested once), and must end
with the uninterrupted run's test metrics, thresholds and history.csv, byte for byte.
SIGTERM and a SIGKILLed loader worker must end the run with one line saying how to resume, and
leave it resumable to the same result.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import run
from datamodules.datamodule import usable_cores
from experiments.interruptions import (
    EXIT_TERMINATED,
    EXIT_WORKER_KILLED,
    inexact_resume_reasons,
    killed_worker,
)
from tests.support.helpers import TINY_MEL_ARGS, read_metrics
from tests.support.paths import REPO_ROOT

EPOCHS = 3

# The recipes the suite offers, one option set each; a new recipe joins with one line.
RECIPES = [
    pytest.param([], id="paper"),  # SGD with the local and global decay
    # (no Adam run of its own: modern's AdamW keeps the same moment state, and its resume restores it)
    # Won et al.'s stages, switched after epochs 0 and 1: the kill lands in the second SGD stage (new optimiser, best
    # weights reloaded), so the stage and the optimiser type must come back from the checkpoint.
    pytest.param(["--recipe", "won2020", "--stage-epochs", "1,1", "--stage-lrs", "0.001,0.0001"], id="won2020"),
    # warm-up + cosine over the 3 epochs, mixup, SpecAugment, EMA (a fast decay, so it moves in a few steps), clipping
    pytest.param(["--recipe", "modern", "--warmup", "0.2", "--ema-decay", "0.9"], id="modern"),
]
PAPER = []


def _options(cache_dir: Path, run_dir: Path, recipe: list[str]) -> list[str]:
    # Small generated clips keep it cheap. patience 1 on the tiny validation set's ROC-AUC makes
    # global-decay restarts likely within the run, so their state has to resume as well.
    data = ["--data", "synthetic", "--synthetic-clips", "64", "--synthetic-clip-samples", "48000",
            "--cache-dir", str(cache_dir), "--no-progress"]  # and the default loader workers
    # (a --recipe with its own schedule has no global decay to make likely: its own switches are in the option set)
    decay = [] if "--recipe" in recipe else ["--patience", "1"]
    return ["--model", "mel_cnn", *data, *TINY_MEL_ARGS["mel_cnn"], "--max-epochs", str(EPOCHS), "--seed", "3",
            *decay, "--monitor", "val/roc_auc", "--monitor-mode", "max", *recipe,
            "--logger", "csv", "--run-dir", str(run_dir)]


def _env() -> dict:
    """The caller's environment less every setting that pins threads or hashing."""
    pinned = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG")
    env = {k: v for k, v in os.environ.items() if k not in pinned}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _start(arguments: list[str], log: Path) -> subprocess.Popen:
    """Start `python ARGUMENTS...` from the repository, stdout and stderr into `log`."""
    with open(log, "w") as stream:
        return subprocess.Popen([sys.executable, *arguments], cwd=REPO_ROOT, env=_env(), stdout=stream,
                                stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    process.wait(timeout=timeout)
    return log.read_text()


def _train_killed_at(options: list[str], stage: str, epoch: int, batch: int, log: Path) -> str:
    process = _start(["-m", "tests.support.kill_during", stage, str(epoch), str(batch), *options], log)
    output = _finish(process, log)
    assert process.returncode == -signal.SIGKILL, output[-3000:]
    return output


class Uninterrupted:
    """Each recipe's uninterrupted run, started once in the background and shared by the tests."""

    def __init__(self, root: Path):
        self.root, self.runs = root, {}

    def start(self, recipe: list[str]) -> None:
        key = tuple(recipe)
        if key not in self.runs:
            run_dir = self.root / f"whole-{len(self.runs)}"
            log = self.root / f"whole-{len(self.runs)}.log"
            self.runs[key] = (_start(["run.py", *_options(self.root / "cache", run_dir, recipe)], log), run_dir, log)

    def result(self, recipe: list[str]) -> Path:
        self.start(recipe)
        process, run_dir, log = self.runs[tuple(recipe)]
        output = _finish(process, log)
        assert process.returncode == 0, output[-3000:]
        return run_dir


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    runs = Uninterrupted(tmp_path_factory.mktemp("resume"))
    yield runs
    for process, _, _ in runs.runs.values():
        if process.poll() is None:
            process.kill()
            process.wait()


def _assert_same_result(expected_dir: Path, got_dir: Path) -> None:
    expected, got = read_metrics(expected_dir), read_metrics(got_dir)
    assert got["test"] == expected["test"]  # every per-tag AUC, TPR and FPR, exactly
    assert got["thresholds"] == expected["thresholds"]
    assert got["epochs"] == expected["epochs"]
    assert Path(got["best_checkpoint"]).name == Path(expected["best_checkpoint"]).name
    # every epoch's losses, AUCs, learning rates and restarts, to the last digit
    assert (got_dir / "history.csv").read_text() == (expected_dir / "history.csv").read_text()
    # and the CSV log: the rows logged before the kill are kept (Lightning's logger would delete them), those
    # of the interrupted part are logged once
    assert (got_dir / "logs" / "metrics.csv").read_text() == (expected_dir / "logs" / "metrics.csv").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_a_killed_run_resumes_to_the_uninterrupted_result(
        recipe, uninterrupted, tmp_path_factory):
    uninterrupted.start(recipe)  # runs meanwhile
    work = tmp_path_factory.mktemp("killed")
    cache_dir = uninterrupted.root / "cache"
    killed = work / "run"
    options = _options(cache_dir, killed, recipe)

    if recipe == PAPER:
        _train_killed_at(options, "validation", 1, 0, work / "kill-1.log")  # in epoch 1's validation
        assert (killed / "checkpoints" / "last.ckpt").is_file() and not (killed / "metrics.json").exists()
    # (paper: resumes from epoch 0's checkpoint, trains epoch 1 again;) dies early in epoch 2
    output = _train_killed_at(options, "train", 2, 1, work / "kill-2.log")
    assert (f"resuming {killed} from checkpoints/last.ckpt" in output) == (recipe == PAPER)
    assert (killed / "checkpoints" / "last.ckpt").is_file() and not (killed / "metrics.json").exists()

    rerun = _start(["run.py", *options], work / "rerun.log")  # what the user does: the same command again
    output = _finish(rerun, work / "rerun.log")
    assert rerun.returncode == 0, output[-3000:]
    assert f"resuming {killed} from checkpoints/last.ckpt" in output
    assert "note:" not in output  # on the CPU a resume is exact: nothing to warn about

    _assert_same_result(uninterrupted.result(recipe), killed)


def _children(pid: int) -> list[int]:
    """Child processes of `pid` (its loader workers), from /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "children") as stream:
            found += [int(child) for child in stream.read().split()]
    return found


def _wait_for_new_checkpoint(process: subprocess.Popen, checkpoint: Path, after_ns: int, timeout: float = 600):
    """Wait until `checkpoint` is written (again): the process is then at the start of the next epoch."""
    deadline = time.monotonic() + timeout
    while not (checkpoint.is_file() and checkpoint.stat().st_mtime_ns > after_ns):
        assert process.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def _one_message(stderr: str, start: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(start)]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds loader workers through /proc")
def test_sigterm_and_a_killed_loader_worker_stop_with_one_line_and_resume_exactly(uninterrupted, tmp_path_factory):
    if usable_cores() < 2:
        pytest.skip("one core: the default is no loader worker to kill")
    uninterrupted.start(PAPER)
    work = tmp_path_factory.mktemp("signals")
    killed = work / "run"
    options = ["run.py", *_options(uninterrupted.root / "cache", killed, PAPER)]
    checkpoint = killed / "checkpoints" / "last.ckpt"

    # SIGTERM (kill, a cluster's preemption) after epoch 0's checkpoint
    process = _start(options, work / "term.log")
    _wait_for_new_checkpoint(process, checkpoint, after_ns=-1)
    process.send_signal(signal.SIGTERM)
    stderr = _finish(process, work / "term.log")
    assert process.returncode == EXIT_TERMINATED, stderr[-3000:]
    line = _one_message(stderr, "stopped:")
    assert "received SIGTERM" in line and f"--resume {killed}" in line and "rerun the same command" in line
    assert not (killed / "metrics.json").exists()

    # rerun; SIGKILL one of its loader workers (what the OOM killer does) once the next checkpoint is written
    written = checkpoint.stat().st_mtime_ns
    process = _start(options, work / "worker.log")
    _wait_for_new_checkpoint(process, checkpoint, after_ns=written)
    workers = _children(process.pid)
    assert workers, "the training process has no loader worker"
    os.kill(workers[0], signal.SIGKILL)
    stderr = _finish(process, work / "worker.log")
    assert process.returncode == EXIT_WORKER_KILLED, stderr[-3000:]
    line = _one_message(stderr, "stopped:")
    assert f"worker process (pid {workers[0]}) was killed by signal SIGKILL" in line
    assert f"--resume {killed}" in line

    # --resume RUN_DIR finishes it, to the uninterrupted result
    process = _start(["run.py", "--resume", str(killed)], work / "resume.log")
    output = _finish(process, work / "resume.log")
    assert process.returncode == 0, output[-3000:]
    _assert_same_result(uninterrupted.result(PAPER), killed)


def test_torchs_reports_of_a_dead_loader_worker_are_recognised():
    assert killed_worker(RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")) == (
        "4242", "was killed by signal SIGKILL")
    assert killed_worker(RuntimeError("DataLoader worker (pid(s) 11, 12) exited unexpectedly")) == ("11, 12", "died")
    assert killed_worker(RuntimeError("DataLoader worker (pid 7) exited unexpectedly with exit code 1. Details are "
                                      "lost due to multiprocessing.")) == ("7", "exited with status 1")
    assert killed_worker(RuntimeError("CUDA out of memory")) is None
    assert killed_worker(ValueError("DataLoader worker (pid 1) is killed by signal: Killed.")) is None


def test_only_a_gpu_without_deterministic_is_named_as_an_inexact_resume():
    assert inexact_resume_reasons("cpu", deterministic=False, cudnn_benchmark=True) == []
    assert inexact_resume_reasons("gpu", deterministic=True, cudnn_benchmark=True) == []
    reasons = inexact_resume_reasons("gpu", deterministic=False, cudnn_benchmark=True)
    assert len(reasons) == 2 and "cuDNN autotuning" in reasons[0] and "atomic" in reasons[1]
    assert len(inexact_resume_reasons("gpu", deterministic=False, cudnn_benchmark=False)) == 1


@pytest.mark.slow
def test_rerunning_a_finished_run_changes_nothing(tiny_cache, tmp_path, capsys):
    args = ["--model", "mel_cnn", *tiny_cache.args(), *TINY_MEL_ARGS["mel_cnn"],
            "--max-epochs", "1", "--logger", "none", "--run-dir", str(tmp_path / "run")]
    assert run.main(args) == 0
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    capsys.readouterr()
    assert run.main(args) == 0
    assert "already holds this finished run" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before
    # the same folder with other settings is refused, not mixed
    assert run.main([*args, "--lr", "0.5"]) == 2
    assert "other settings (lr)" in capsys.readouterr().err


@pytest.mark.slow
def test_resuming_on_another_number_of_processes_warns(tiny_cache, tmp_path, capsys):
    """A job requeued on fewer GPUs may resume its run folder, but the global batch changes: it says so."""
    run_dir = tmp_path / "run"
    args = ["--model", "mel_cnn", *tiny_cache.args(), *TINY_MEL_ARGS["mel_cnn"],
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
