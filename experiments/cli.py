"""run.py's command line, built from the option declarations in `experiments.options`.

jsonargparse (what LightningCLI builds on) parses the flags and the experiment files:
`--config exp.yaml [--config more.yaml]` reads YAML whose keys are the options' names, later
files and flags overriding earlier ones. Every option is parsed with no default, so what the
command line and the files gave is known from the parse itself (`Command.given`: a sweep keeps
those options fixed, `--evaluate` lets them override the run's saved ones); the declared
defaults are filled in afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser

from experiments.options import (
    ALL_GROUPS,
    RUN_OPTION_NAMES,
    ComparisonOptions,
    ModeOptions,
    RunOptions,
    SweepOptions,
    TaggingOptions,
    declared_fields,
    default_text,
    flag_of,
    masked_storage,
    parse_devices,
)
from experiments.recipes import apply_recipe

USAGE_ERROR = 2
YAML_HEADER = ("# run.py configuration: `python run.py --config THIS_FILE` runs it; flags after it override it.\n"
               "# null means the model's default (its registry entry; see --summary).\n")


class _Parser(ArgumentParser):
    """Usage errors on one line: the full usage is dozens of lines, and --help has it."""

    def error(self, message: str, ex=None):
        text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
        self.exit(USAGE_ERROR, f"{self.prog}: error: {text} (--help lists the options)\n")


def build_parser(description: str | None = None) -> ArgumentParser:
    parser = _Parser(prog="run.py", description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="YAML experiment file (keys: the options below, e.g. `lr: 0.001`); may be repeated, "
                             "later files and flags override earlier ones")
    for group in ALL_GROUPS:
        title, _, _ = (group.__doc__ or group.__name__).partition(":")
        arguments = parser.add_argument_group(title.strip().rstrip("."))
        for f in declared_fields(group):
            _add(arguments, f)
    return parser


def _add(arguments, f: dataclasses.Field) -> None:
    meta = f.metadata
    help_text = meta["help"]
    if f.default is not None and meta["action"] not in ("store_true", "store_false"):
        help_text += f" (default: {default_text(f)})"
    kwargs = {"dest": f.name, "default": None, "help": help_text}
    if meta["metavar"]:
        kwargs["metavar"] = meta["metavar"]
    action = meta["action"]
    if action in ("store_true", "store_false"):
        kwargs["action"] = action
    elif action == "boolean":
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        if action == "nargs+":
            kwargs["nargs"] = "+"
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
        if f.name == "devices":
            kwargs["type"] = parse_devices
        elif meta["type"] is not None:
            kwargs["type"] = meta["type"]
    arguments.add_argument(flag_of(f), **kwargs)


@dataclass(frozen=True)
class Command:
    """One parsed command line: what to do, the run's options, and which options were given."""

    mode: ModeOptions
    run: RunOptions
    tagging: TaggingOptions
    sweep: SweepOptions
    comparison: ComparisonOptions
    given: frozenset[str]


def parse_command(argv: list[str] | None, parser: ArgumentParser | None = None) -> Command:
    """Parse `argv` (flags and --config files); exits with one line on a usage error."""
    parser = parser or build_parser()
    namespace = parser.parse_args(argv)
    values = {k: v for k, v in vars(namespace).items() if k != "config" and v is not None}
    for name in ("tag", "evaluate", "compare"):  # a YAML file may give one path as a string
        if isinstance(values.get(name), str):
            values[name] = [values[name]]

    def build(group):
        names = {f.name for f in dataclasses.fields(group)}
        return group(**{k: v for k, v in values.items() if k in names})

    sweep = build(SweepOptions)
    # The recipe (experiments/recipes.py) fills in every option not given, once the model is known.
    run = apply_recipe(build(RunOptions), set(values), model=values.get("model") or sweep.sweep)
    return Command(build(ModeOptions), run, build(TaggingOptions), sweep, build(ComparisonOptions),
                   frozenset(values))


def given_run_options(command: Command) -> set[str]:
    return set(command.given) & RUN_OPTION_NAMES


def dump_yaml(options: RunOptions, sweep: SweepOptions | None = None) -> str:
    """The options as an experiment file (`--config`): every run option, plus the sweep's when given.

    A --storage password is written as *** (`masked_storage`): the file is meant to be kept and
    shared. Read back, the masked URL connects with the password in PGPASSWORD (`sweeps.storage`).
    """
    values = options.to_yaml_dict()
    if sweep is not None:
        values.update(dataclasses.asdict(sweep))
        values["storage"] = masked_storage(values["storage"])
    return YAML_HEADER + yaml.safe_dump(values, sort_keys=False, default_flow_style=None)
