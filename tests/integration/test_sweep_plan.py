"""A sweep says its plan before any data work, chooses demonstration defaults on the stand-in only, and reports
its progress; every experiment file in configs/ parses, and the quick start runs (CI-sized)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

import run
from experiments.cli import parse_command
from sweeps.plan import STAND_IN_SWEEP, stand_in_defaults
from tests.support.helpers import TINY_CLIP_SAMPLES, tiny_data_args
from tests.support.paths import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def test_a_bare_sweep_of_the_stand_in_chooses_its_demonstration_defaults_and_prints_them(capsys):
    assert run.main(["--sweep", "lstm_mel", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    for name, value in STAND_IN_SWEEP.items():
        assert printed[name] == value, name


def test_given_options_and_real_data_keep_their_values(tmp_path):
    command = parse_command(["--sweep", "lstm_mel", "--trials", "3", "--lr", "0.05",
                             "--sweep-space", '{"input_norm": [false, true]}'])
    options, settings, choices = stand_in_defaults(command.run.replace(model="lstm_mel"), command.sweep,
                                                   set(command.given))
    chosen = {c.name for c in choices}
    assert settings.trials == 3 and options.lr == 0.05 and not {"trials", "lr", "input_norm"} & chosen
    assert options.optimizer == "adam" and "optimizer" in chosen  # not given: the stand-in's choice
    real = parse_command(["--sweep", "lstm_mel", "--data", str(tmp_path)])
    options, settings, choices = stand_in_defaults(real.run.replace(model="lstm_mel"), real.sweep, set(real.given))
    assert not choices and options.optimizer == "sgd" and settings.trials == 20  # the paper's defaults stay


def test_the_plan_comes_before_any_data_work(tmp_path):
    """The bare command's plan, study and space are printed while the cache folder is still empty."""
    cache = tmp_path / "cache"
    env = dict(os.environ, MTAT_TAGGING_CACHE=str(cache), OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "run.py"), "--sweep", "lstm_mel", "--runs-root",
                             str(tmp_path / "runs"), "--logger", "none"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    lines = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < 120:
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
            if line.strip().startswith("space"):
                break
        generated = [p for p in cache.rglob("*") if p.is_file() and p.suffix == ".mp3"] if cache.exists() else []
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = "".join(lines)
    assert not generated, "data was generated before the plan was complete"
    for needed in ("sweep plan for lstm_mel", "trials   8", "at most 6 per trial", "960 clips of 3.7 s",
                   "chosen for the stand-in", "--optimizer adam (otherwise sgd)", "--input-norm (otherwise False)",
                   "study    lstm_mel-", "space    "):
        assert needed in text, (needed, text)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_experiment_file_parses_and_prints_a_config_that_parses_again(path, tmp_path, capsys):
    """Each file runs as it is (`--print-config` resolves every option); real-data files may leave --data to the
    user, and say so in their comments."""
    assert run.main(["--config", str(path), "--print-config"]) == 0
    printed = tmp_path / "printed.yaml"
    printed.write_text(capsys.readouterr().out)
    parse_command(["--config", str(printed)])
    assert "python run.py --config configs/" + path.name in path.read_text()  # says how to run it


def test_the_required_experiment_files_exist():
    names = {p.stem for p in CONFIGS}
    assert {"quickstart", "paper-table4", "won2020-short-chunk-resnet", "modern-recipe", "mtg-jamendo"} <= names


@pytest.mark.slow
def test_the_quick_start_runs_ci_sized_with_its_plan_estimate_and_progress(cache_dir, tmp_path, capsys):
    """configs/quickstart.yaml, made CI-sized with flags (fewer, shorter clips; two one-epoch trials): the plan
    names only the stand-in choices the command did not make, the estimate follows the first epoch, progress
    follows each trial, and the trials' config.yaml record the choices."""
    argv = ["--config", str(REPO_ROOT / "configs" / "quickstart.yaml"), *tiny_data_args(cache_dir, clips=120),
            "--trials", "2", "--max-epochs", "1", "--n-mels", "32", "--hop-length", "1024", "--logger", "none",
            "--runs-root", str(tmp_path)]
    assert run.main(argv) == 0
    captured = capsys.readouterr()
    err, out = captured.err, captured.out
    assert "--optimizer adam (otherwise sgd)" in err and "--trials" not in err.split("chosen for the stand-in")[1]
    assert f"{120} clips of {TINY_CLIP_SAMPLES / 16000:.1f} s" in err
    assert "an epoch takes about" in err and "1 of 2 trials done" in err and "2 of 2 trials done" in err
    assert err.index("an epoch takes about") < err.index("1 of 2 trials done")
    assert "best trial" in out and "test ROC-AUC" in out and "sweep:" not in out  # results only on stdout
    trials = sorted((tmp_path / "sweeps").glob("*/trials/trial-*"))
    assert len(trials) == 2
    for trial in trials:
        saved = yaml.safe_load((trial / "config.yaml").read_text())
        assert (saved["optimizer"], saved["lr"], saved["input_norm"]) == ("adam", 0.001, True)
