"""The typed configuration: declarations, --config files, --print-config, run-folder identity, layering."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest
import yaml

import run
from experiments import options as config
from experiments.cli import build_parser, dump_yaml, parse_command
from experiments.options import NON_IDENTITY_OPTIONS, NOT_TUNABLE, RUN_OPTION_NAMES, RunOptions
from experiments.run_folder import config_digest
from tests.support.paths import REPO_ROOT


def test_every_option_is_declared_once_with_type_help_and_properties():
    seen = {}
    for group in config.ALL_GROUPS:
        for f in config.declared_fields(group):
            assert f.name not in seen, f"{f.name} declared in {seen.get(f.name)} and {group.__name__}"
            seen[f.name] = group.__name__
            assert f.metadata["help"].strip(), f.name
            assert isinstance(f.metadata["identity"], bool) and isinstance(f.metadata["tunable"], bool)
    parser_dests = {action.dest for action in build_parser()._actions} - {"help", "help_all", "config"}
    assert parser_dests == set(seen)


def test_run_folder_names_are_those_of_earlier_versions():
    """Default run folders are named by a digest of the identity options: the typed configuration must
    give the digests the options dict gave (pinned from the code before it), or reruns stop resuming."""
    plain = run.parse_options(["--model", "mel_cnn", "--cache-dir", "/c", "--runs-root", "/r"])
    tuned = run.parse_options(["--model", "lstm_mel", "--cache-dir", "/c", "--lr", "0.1", "--input-norm",
                               "--optimizer", "adam", "--hop-length", "256"])
    assert (config_digest(plain), config_digest(tuned)) == ("073e813d", "eef901c5")
    # non-identity options leave the digest alone; identity options change it
    assert config_digest(plain.replace(num_workers=3, logger="csv", devices=2)) == "073e813d"
    assert config_digest(plain.replace(lr=0.02)) != "073e813d"


def test_identity_and_tunable_sets_follow_from_the_declarations():
    assert {"run_dir", "runs_root", "num_workers", "prepare_workers", "progress", "logger", "devices",
            "num_nodes", "accelerator", "strategy", "log_every_n_steps", "cudnn_benchmark"} <= NON_IDENTITY_OPTIONS
    assert not {"lr", "model", "seed", "n_fft", "data", "tags"} & NON_IDENTITY_OPTIONS
    assert {"model", "data", "seed", "tags", "split", "cache_dir"} <= NOT_TUNABLE
    assert not {"lr", "hop_length", "n_mels", "dropout", "global_decay"} & NOT_TUNABLE


def test_config_files_and_flags_override_in_order(tmp_path, capsys):
    first = tmp_path / "exp.yaml"
    first.write_text("model: lstm_mel\nlr: 0.001\noptimizer: adam\nn_mels: 64\n")
    second = tmp_path / "more.yaml"
    second.write_text("lr: 0.002\nseed: 7\n")
    command = parse_command(["--config", str(first), "--config", str(second), "--seed", "9"])
    assert (command.run.model, command.run.lr, command.run.optimizer, command.run.n_mels, command.run.seed) == \
        ("lstm_mel", 0.002, "adam", 64, 9)
    assert command.given == {"model", "lr", "optimizer", "n_mels", "seed"}
    # what a flag gives equals what a file gives
    assert command.run == parse_command(["--model", "lstm_mel", "--lr", "0.002", "--optimizer", "adam",
                                         "--n-mels", "64", "--seed", "9"]).run


@pytest.mark.parametrize("text, message", [
    ("bogus: 1\n", "bogus"),
    ("lr: fast\n", "lr"),
    ("model: resnet9000\n", "model"),
    ("n_tags: 0\n", "n_tags"),
])
def test_bad_config_file_values_are_one_line_errors(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--config", str(path), "--summary"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def test_print_config_is_a_complete_file_that_runs_as_it_is(tmp_path, capsys):
    argv = ["--model", "lstm_mel", "--lr", "0.003", "--hop-length", "256", "--no-progress", "--devices", "1"]
    assert run.main([*argv, "--print-config"]) == 0
    text = capsys.readouterr().out
    values = yaml.safe_load(text)
    assert set(values) == RUN_OPTION_NAMES  # complete: every run option, nothing else
    path = tmp_path / "printed.yaml"
    path.write_text(text)
    assert parse_command(["--config", str(path)]).run == parse_command(argv).run
    # and it runs: --summary of the printed file describes the same network
    assert run.main(["--config", str(path), "--summary"]) == 0
    assert "lstm_mel" in capsys.readouterr().out


def test_print_config_of_a_sweep_keeps_the_sweep_options(capsys):
    assert run.main(["--sweep", "mel_cnn", "--trials", "3", "--print-config"]) == 0
    values = yaml.safe_load(capsys.readouterr().out)
    assert values["model"] == "mel_cnn" and values["sweep"] == "mel_cnn" and values["trials"] == 3


def test_saved_options_round_trip_and_refuse_unknown_keys():
    options = run.parse_options(["--model", "mel_cnn", "--lr", "0.05"])
    assert RunOptions.from_dict(options.to_dict()) == options
    assert RunOptions.from_dict(dict(options.to_dict(), resolved={"tags": []})) == options
    with pytest.raises(config.ConfigError, match="colour"):
        RunOptions.from_dict(dict(options.to_dict(), colour="red"))
    with pytest.raises(config.ConfigError, match="unknown option"):
        options.replace(colour="red")
    assert yaml.safe_load(dump_yaml(options))["lr"] == 0.05


def _documented_pages() -> list[Path]:
    """Where commands are documented: the README and every page of the documentation site."""
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]


def _documented_commands(path: Path) -> list[tuple[list[str], str | None]]:
    """The `python run.py ...` lines of the page's shell code blocks: (arguments, file a `>` redirects to)."""
    text = path.read_text()
    # every fenced block, so that a block in another language is consumed whole, never read as prose
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
    commands = []
    for language, block in blocks:
        if language not in ("", "bash", "sh", "console"):
            continue
        joined = re.sub(r"\\\n\s*", " ", block)
        variables = dict(re.findall(r'^(\w+)="([^"]*)"$', joined, re.M))  # D="--data synthetic ..."
        for name, value in variables.items():
            joined = joined.replace("$" + name, value)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if "python run.py " in line:
                words = shlex.split(line[line.index("python run.py ") + len("python run.py "):])
                ends = [i for i, w in enumerate(words) if w in ("|", "&&", ";", "&") or w.startswith((">", "2>"))]
                redirect = words[ends[0] + 1] if ends and words[ends[0]] == ">" else None
                commands.append((words[:ends[0]] if ends else words, redirect))
    return commands


def test_every_documented_command_parses(tmp_path, monkeypatch, capsys):
    """Each `python run.py ...` line of the README and of the docs pages parses; `--print-config > FILE`
    lines are run, so the commands that read FILE back parse what the suite really printed (other
    --config files, e.g. in a run folder that does not exist here, get a one-line stand-in)."""
    monkeypatch.chdir(tmp_path)
    found = {path.relative_to(REPO_ROOT).as_posix(): _documented_commands(path) for path in _documented_pages()}
    commands = [command for page_commands in found.values() for command in page_commands]
    # the pages document many commands; a regex gone wrong finds none
    assert len(commands) >= 30 and found["README.md"], {page: len(c) for page, c in found.items()}
    for page, page_commands in found.items():
        for argv, redirect in page_commands:
            for i, word in enumerate(argv[:-1]):
                if word == "--config" and not Path(argv[i + 1]).exists():
                    Path(argv[i + 1]).parent.mkdir(parents=True, exist_ok=True)
                    Path(argv[i + 1]).write_text("model: mel_cnn\n")
            if "--print-config" in argv and redirect:
                assert run.main(argv) == 0, (page, argv)
                Path(redirect).write_text(capsys.readouterr().out)
            else:
                parse_command(argv)  # SystemExit(2) on an unknown flag or a bad value


def test_option_reference_matches_the_declarations():
    text = (REPO_ROOT / config.OPTION_PAGE).read_text()
    start, end = config.TABLE_START, config.TABLE_END
    assert start in text and end in text, f"the option table markers are missing from {config.OPTION_PAGE}"
    table = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert table == config.option_table(), (f"{config.OPTION_PAGE} is out of date: run "
                                            "`python -m experiments.options` from the repository root")


def test_run_options_groups_are_disjoint_and_cover_run_options():
    names = [f.name for group in config.RUN_GROUPS for f in config.declared_fields(group)]
    assert len(names) == len(set(names)) and set(names) == RUN_OPTION_NAMES
    assert {f.name for f in dataclasses.fields(RunOptions)} == RUN_OPTION_NAMES
