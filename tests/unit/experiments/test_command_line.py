"""The command line refuses bad input before anything happens, names the fix, and starts without torch.

Every numeric option declares its valid range (`valid=` in experiments/options.py); the tests below take
the ranges from the declarations, so an option added later is checked without a new test: a value just
outside the range is refused as a flag, in a --config file and in a saved configuration, in one line, with
no run folder left behind.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import fields

import pytest

import run
from experiments.cli import read_config_file, short_help
from experiments.options import ALL_GROUPS, Interval, RunOptions, declared_fields, flag_of
from infrastructure.errors import ConfigError
from tests.support.paths import REPO_ROOT

RANGED = [f for group in ALL_GROUPS for f in declared_fields(group) if f.metadata["valid"] is not None]
NUMERIC = [f for group in ALL_GROUPS for f in declared_fields(group)
           if f.metadata["type"] in (int, float) or f.name in ("stage_epochs", "stage_lrs", "limit_train_batches",
                                                               "limit_val_batches", "limit_test_batches")]


def _outside(interval: Interval) -> float:
    """A value just outside the interval (below it: every declared range has a finite lower end)."""
    assert math.isfinite(interval.low)
    return interval.low if not interval.low_closed else interval.low - 1


def _text(f, value) -> str:
    text = repr(int(value)) if float(value).is_integer() else repr(value)
    return text if f.metadata["type"] is not int or "." not in text else str(int(value))


def _mode_args(f) -> list[str]:
    """What else the command needs for the option to be read at all (its group's mode)."""
    names = {g.__name__ for g in ALL_GROUPS if f in declared_fields(g)}
    if "SweepOptions" in names:
        return ["--sweep", "mel_cnn"]
    if "TaggingOptions" in names:
        return ["--tag", "x.mp3", "--checkpoint", "x.ckpt"]
    if "ComparisonOptions" in names:
        return ["--compare", "a"]
    return ["--model", "mel_cnn"]


def test_every_numeric_option_declares_its_range():
    missing = [f.name for f in NUMERIC if f.metadata["valid"] is None and not f.metadata["choices"]]
    assert not missing, f"numeric options without a declared range: {missing}"


@pytest.mark.parametrize("f", RANGED, ids=lambda f: f.name)
def test_a_value_outside_the_range_is_refused_as_a_flag_in_a_file_and_in_a_saved_config(f, tmp_path, capsys,
                                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    interval = f.metadata["valid"]
    bad = _outside(interval)
    text = _text(f, bad)
    argv = [*_mode_args(f), flag_of(f), text, "--runs-root", str(tmp_path / "runs"), "--print-config"]
    with pytest.raises(SystemExit) as exit_:
        run.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert flag_of(f) in err and f"must be {interval.describe()}" in err
    # the same value in an experiment file: its name, line and range
    config = tmp_path / "exp.yaml"
    config.write_text(f"# an experiment\n{f.name}: {text}\n")
    with pytest.raises(SystemExit) as exit_:
        run.main([*_mode_args(f), "--config", str(config), "--print-config"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert f"{config} line 2: {f.name}: must be {interval.describe()}" in err
    assert not (tmp_path / "runs").exists()
    # and in options built any other way (a saved config.json, a sweep trial's values)
    if f.name in {x.name for x in fields(RunOptions)}:
        value = [int(bad)] if f.name == "stage_epochs" else [bad] if f.name == "stage_lrs" else bad
        with pytest.raises(ConfigError, match=f"{flag_of(f)} must be"):
            run.parse_options(["--model", "mel_cnn"]).replace(**{f.name: value})


def test_a_value_at_the_edge_of_its_range_is_accepted():
    options = run.parse_options(["--model", "mel_cnn", "--momentum", "0", "--weight-decay", "0", "--lr", "1e-9",
                                 "--global-decay", "1"])
    assert (options.momentum, options.weight_decay, options.global_decay) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("text, expected", [
    ("model: mel_cnn\nlr: [1,\n", "line 3, column 1: not valid YAML"),
    ("model: mel_cnn\n  lr: 0.1\n", "line 2"),
    ("- mel_cnn\n", "a mapping of option names"),
    ("model: mel_cnn\nlearning_rate: 0.1\n", "line 2: unknown option 'learning_rate'; did you mean lr?"),
    ("model: mel_cnn\nepochs: 3\n", "line 2: unknown option 'epochs'; did you mean max_epochs?"),
    ("model: mel_cnn\nhop_lenght: 256\n", "line 2: unknown option 'hop_lenght'; did you mean hop_length?"),
    ("model: mel_cnn\nlr: fast\n", "line 2: lr: could not convert"),
    ("model: mel_cnn\nmax_epochs: 2.5\n", "line 2: max_epochs: expected an integer"),
    ("model: mel_cnn\nnesterov: 1\n", "line 2: nesterov: expected true or false"),
    ("model: mel_cnn\noptimizer: rmsprop\n", "line 2: optimizer: expected one of sgd, adam, adamw"),
])
def test_experiment_file_errors_name_the_file_the_line_and_the_fix(text, expected, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        read_config_file(path)
    assert str(error.value).startswith(str(path)) and expected in str(error.value)


@pytest.mark.parametrize("flag, suggestion", [
    ("--learning-rate", "--lr"), ("--epochs", "--max-epochs"), ("--lerning-rate", "--lr"), ("--hop-lenght", "--hop-length"),
    ("--gpus", "--devices"), ("--batchsize", "--batch-size"),
])
def test_an_unknown_flag_names_the_closest_option(flag, suggestion, capsys):
    with pytest.raises(SystemExit) as exit_:
        run.main(["--model", "mel_cnn", flag, "3"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert f"unknown option {flag}; did you mean {suggestion}?" in err


def test_short_help_is_grouped_and_fits_80_lines_and_help_all_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        run.main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out == short_help()
    assert len(out.splitlines()) <= 80 and max(map(len, out.splitlines())) <= 120
    assert "--help-all" in out and "--model" in out and "--sweep" in out and "--tag" in out
    with pytest.raises(SystemExit):
        run.main(["--help-all"])
    full = capsys.readouterr().out
    for group in ALL_GROUPS:
        for f in declared_fields(group):
            assert flag_of(f) in full, f.name
    described = [line for line in full.splitlines() if line.lstrip().startswith("--print")]
    assert "--print_config" not in full and len(described) == 1  # one print-config flag


def _imported_by(argv: list[str]) -> set[str]:
    """The heavy packages that `python run.py ARGV` imports (it may fail: errors are commands too)."""
    code = ("import sys, run\n"
            "try:\n    run.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = {'torch', 'lightning', 'torchaudio', 'nnAudio', 'optuna', 'wandb', 'pandas', 'matplotlib'}\n"
            "print('HEAVY:' + ' '.join(sorted(m for m in heavy if m in sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("HEAVY:")]
    return set(line.removeprefix("HEAVY:").split())


@pytest.mark.parametrize("argv", [
    ["--help"], ["--help-all"], ["--model", "mel_cnn", "--print-config"],
    ["--model", "mel_cnn", "--recipe", "modern", "--print-config"], ["--sweep", "lstm_mel", "--print-config"],
    ["--model", "mel_cnn", "--lr", "-1"], ["--model", "mel_cnn", "--learning-rate", "1"], ["--model", "nope"],
], ids=" ".join)
def test_help_print_config_and_usage_errors_import_no_heavy_package(argv):
    """What makes them answer at once (benchmarks/startup.py measures the time): no torch, Lightning, Optuna,
    W&B, pandas or matplotlib before a command needs them."""
    assert _imported_by(argv) == set()
