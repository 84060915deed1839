"""`--rounds N`: distillation or self-training repeated, the student of round k teaching round k + 1.

Each round is an ordinary training run with its own run folder: round 1 is the command itself (its teachers
are the given ``--teacher`` runs), round k + 1 the same command with round k's folder as its only teacher.
With ``--run-dir DIR`` the rounds are ``DIR/round-1`` ... ``DIR/round-N``; otherwise each has its default
folder, named by its options and, through its teacher, by the weights of the round before
(`experiments.run_folder.config_digest`), so round 1 of a chain is the run of the same command without
``--rounds``. ``rounds`` itself is not part of a run's identity, and every round's config.json saves it as 1:
a round's folder holds the command of that round alone.

Resuming a chain is what `--reproduce` does for a table: rerunning the same command finds the finished
rounds (`run_experiment` returns a finished run as it is) and resumes the killed one from its last
checkpoint, exactly; the rounds after it follow.
"""

from __future__ import annotations

import sys
from pathlib import Path

from experiments.interruptions import clean_stops
from experiments.options import RunOptions
from experiments.resolve import check_rounds
from experiments.run_folder import RunOutcome, run_dir_of
from experiments.train import run_experiment
from infrastructure.errors import ConfigError
from infrastructure.io import is_global_zero


def round_options(options: RunOptions, round_: int, previous: Path | None) -> RunOptions:
    """The options of round ``round_`` (from 1) of ``options``' chain; ``previous``: round ``round_ - 1``'s folder."""
    if not options.teacher:
        raise ConfigError("--rounds needs --teacher: the first round's teachers")
    changes: dict = {"rounds": 1}
    if round_ > 1:
        if previous is None:
            raise ValueError(f"round {round_} needs the folder of round {round_ - 1}")
        changes["teacher"] = (str(previous),)
    if options.run_dir:
        changes["run_dir"] = str(Path(options.run_dir) / f"round-{round_}")
    return options.replace(**changes)


def run_rounds(options: RunOptions, extra_callbacks=()) -> list[RunOutcome]:
    """Train every round of the chain in turn (finished rounds are reused, a killed one resumes); their outcomes."""
    check_rounds(options)  # each round resolves as a run of its own (rounds 1): the chain is checked here
    outcomes: list[RunOutcome] = []
    for round_ in range(1, options.rounds + 1):
        current = round_options(options, round_, outcomes[-1].run_dir if outcomes else None)
        run_dir = run_dir_of(current)
        if is_global_zero():
            print(f"round {round_}/{options.rounds}: teacher(s) {', '.join(current.teacher)}; run folder {run_dir}",
                  file=sys.stderr, flush=True)
        with clean_stops(run_dir):
            outcomes.append(run_experiment(current, extra_callbacks))
    return outcomes
