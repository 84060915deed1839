"""run.py's command line, built from the option declarations in `experiments.options`.

Flags and experiment files are parsed in the order they come: `--config exp.yaml [--config more.yaml]`
reads YAML whose keys are the options' names, later files and flags overriding earlier ones. Every
option is parsed with no default, so what the command line and the files gave is known from the parse
itself (`Command.given`: a sweep keeps those options fixed, `--evaluate` lets them override the run's
saved ones); the declared defaults are filled in afterwards.

The parser is the standard library's: it imports in milliseconds, so `--help`, `--print-config` and a
mistyped option answer before anything heavy is loaded. Every problem is one line: a bad value names
its flag (or its file and line) and the valid range; an unknown option names the closest real one.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from experiments.options import (
    ALL_GROUPS,
    RUN_OPTION_NAMES,
    ComparisonOptions,
    ModeOptions,
    OptionValueError,
    RunOptions,
    SweepOptions,
    TaggingOptions,
    declared_fields,
    default_text,
    flag_of,
    masked_storage,
    parse_devices,
)
from experiments.options import (
    FIELDS_BY_NAME as FIELDS,
)
from experiments.recipes import recipe_changes
from infrastructure.errors import ConfigError

USAGE_ERROR = 2
YAML_HEADER = ("# run.py configuration: `python run.py --config THIS_FILE` runs it; flags after it override it.\n"
               "# null means the model's default (its registry entry; see --summary).\n")
HELP_ALL = "--help-all"

USAGE = """usage: python run.py --model MODEL [options]            train and test a model
       python run.py --sweep MODEL [options]            tune it with Optuna (start it again to add workers)
       python run.py --tag PATH... --checkpoint RUN     tag your own music
       python run.py --evaluate RUN... | --resume RUN | --compare RUN... | --reproduce TABLE | --download DIR
       python run.py --config FILE [options]            an experiment file (configs/*.yaml; --print-config)"""


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line (the full usage is dozens of lines, and --help has it); unknown options answered
    with the closest real one."""

    def error(self, message: str):
        text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
        self.exit(USAGE_ERROR, f"{self.prog}: error: {text} (--help lists the options)\n")

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            unknown = next((word for word in extras if word.startswith("-")), extras[0])
            self.error(f"unknown option {unknown}{_suggestion(unknown)}" if unknown.startswith("-")
                       else f"unexpected argument {unknown!r}")
        return namespace


def _suggestion(word: str) -> str:
    """'; did you mean --lr?' for --learning-rate (a name other tools use) or --lerning-rate (a near miss of either);
    else ''."""
    name = word.lstrip("-").split("=")[0].replace("-", "_")
    candidates = {}
    for f in FIELDS.values():
        candidates[flag_of(f).lstrip("-").replace("-", "_")] = flag_of(f)
        candidates.update({alias: flag_of(f) for alias in f.metadata["known_as"]})
    if name in candidates:
        return f"; did you mean {candidates[name]}?"
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {candidates[close[0]]}?" if close else ""


def _key_suggestion(key: str) -> str:
    """The same for an experiment file's key: 'did you mean lr?'."""
    text = _suggestion("--" + key)
    return text.replace("--", "").replace("-", "_") if text else ""


def _checked(field: dataclasses.Field, convert):
    """`convert` (a flag's type) followed by the option's range check; argparse shows the message."""
    interval = field.metadata["valid"]

    def parse(text):
        value = convert(text)
        if interval is not None:
            interval.check(value)
        return value

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse's "invalid int value: 'x'"
    return parse


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="run.py", description=description, add_help=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-h", "--help", action=_ShortHelp, nargs=0, help="the essential options, and exit")
    parser.add_argument(HELP_ALL, action=_FullHelp, nargs=0, help="every option, grouped, and exit")
    parser.add_argument("--config", action=_ConfigFile, metavar="FILE",
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
    if meta["valid"] is not None:
        help_text += f" (valid: {meta['valid'].describe()})"
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
            kwargs["type"] = _checked(f, meta["type"])
    arguments.add_argument(flag_of(f), **kwargs)


# ---- --config FILE ------------------------------------------------------------------------------------
class _ConfigFile(argparse.Action):
    """Reads an experiment file where it stands on the command line: its keys set the options they name, so
    that later files and flags override it, earlier ones are overridden."""

    def __call__(self, parser, namespace, path, option_string=None):
        try:
            values = read_config_file(path)
        except ConfigError as error:
            parser.error(str(error))
        for name, value in values.items():
            setattr(namespace, name, value)


def read_config_file(path: str | Path) -> dict:
    """The options an experiment file gives, checked as flags are: ConfigError naming the file, the line and the
    problem (a YAML syntax error, an unknown key with the closest option, a value of the wrong type or range)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"--config {path}: {error.strerror or error}") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {error.problem or error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment file is a mapping of option names to values (`lr: 0.001`), "
                          f"not a {type(data).__name__}")
    lines = {key.value: key.start_mark.line + 1 for key, _ in node.value} if isinstance(node, yaml.MappingNode) else {}
    values = {}
    for key, value in data.items():
        where = f"{path} line {lines.get(key, '?')}"
        if key not in FIELDS:
            raise ConfigError(f"{where}: unknown option {key!r}{_key_suggestion(str(key))}")
        try:
            values[key] = _from_yaml(FIELDS[key], value)
        except (OptionValueError, ValueError, TypeError) as error:
            raise ConfigError(f"{where}: {key}: {error}") from None
    return values


def config_as_flags(path: str | Path) -> list[str]:
    """An experiment file as the flags that say the same (what `--reproduce` passes on to each run it trains)."""
    argv = []
    for name, value in read_config_file(path).items():
        f = FIELDS[name]
        flag, action = flag_of(f), f.metadata["action"]
        if value is None:
            continue
        if action in ("store_true", "store_false"):
            if value != f.default:
                argv.append(flag)
        elif action == "boolean":
            argv.append(flag if value else "--no-" + flag[2:])
        elif action == "nargs+":
            argv += [flag, *map(str, value)]
        elif isinstance(value, list | tuple):
            argv += [flag, ",".join(map(str, value))]
        else:
            argv += [flag, str(value)]
    return argv


def _from_yaml(f: dataclasses.Field, value):
    """A YAML value as the option holds it (what the flag's parsing gives for the same text)."""
    meta = f.metadata
    if value is None:
        return None
    if meta["action"] in ("store_true", "store_false", "boolean"):
        if not isinstance(value, bool):
            raise OptionValueError(f"expected true or false, got {value!r}")
        return value
    if meta["action"] == "nargs+":
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if f.name == "devices":
        return parse_devices(value)
    convert = meta["type"]
    if convert is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise OptionValueError(f"expected an integer, got {value!r}")
        value = int(value)
    elif convert is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise OptionValueError(f"expected a number, got {value!r}")
        value = float(value)
    elif convert is not None:
        value = convert(value)
    elif not isinstance(value, str):
        value = str(value)
    if meta["choices"] and value not in meta["choices"]:
        raise OptionValueError(f"expected one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    if meta["valid"] is not None:
        meta["valid"].check(value)
    return value


# ---- help -----------------------------------------------------------------------------------------------
class _ShortHelp(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(short_help())
        parser.exit(0)


class _FullHelp(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        parser.exit(0)


def short_help() -> str:
    """The essential options, grouped, each on one line; `--help-all` has the rest."""
    lines = [USAGE, ""]
    for group in ALL_GROUPS:
        essential = [f for f in declared_fields(group) if f.metadata["essential"]]
        if not essential:
            continue
        lines.append((group.__doc__ or group.__name__).partition(":")[0].partition("(")[0].strip().rstrip(".") + ":")
        for f in essential:
            name = f"{flag_of(f)} {_metavar(f)}".rstrip()
            lines.append(f"  {name:<26}  {f.metadata['essential']}")
    lines += ["", f"{len(FIELDS)} options in all: python run.py {HELP_ALL} lists them, grouped "
              "(docs/reference/options.md too)."]
    return "\n".join(lines) + "\n"


def _metavar(f: dataclasses.Field) -> str:
    meta = f.metadata
    if meta["action"] in ("store_true", "store_false", "boolean"):
        return ""
    if meta["metavar"]:
        return meta["metavar"] + (" ..." if meta["action"] == "nargs+" else "")
    if meta["choices"] and len("|".join(map(str, meta["choices"]))) <= 20:
        return "|".join(map(str, meta["choices"]))
    return {int: "N", float: "X"}.get(meta["type"], "NAME")


# ---- the parsed command ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One parsed command line: what to do, the run's options, and which options were given."""

    mode: ModeOptions
    run: RunOptions
    tagging: TaggingOptions
    sweep: SweepOptions
    comparison: ComparisonOptions
    given: frozenset[str]


def parse_command(argv: list[str] | None, parser: argparse.ArgumentParser | None = None) -> Command:
    """Parse `argv` (flags and --config files); exits with one line on a usage error."""
    parser = parser or build_parser()
    namespace = parser.parse_args(argv)
    values = {k: v for k, v in vars(namespace).items() if k != "config" and v is not None}

    def build(group, **more):
        names = {f.name for f in dataclasses.fields(group)}
        return group(**{**{k: v for k, v in values.items() if k in names}, **more})

    sweep = build(SweepOptions)
    _check_modes(parser, values)
    # The recipe (experiments/recipes.py) fills in every option not given, once the model is known.
    given = {k: v for k, v in values.items() if k in RUN_OPTION_NAMES}
    run = build(RunOptions, **recipe_changes(given, values.get("model") or sweep.sweep))
    return Command(build(ModeOptions), run, build(TaggingOptions), sweep, build(ComparisonOptions),
                   frozenset(values))


_MODE_OF = {**{name: ("reproduce",) for name in ("seeds", "dry_run", "task_index")},
            **{f.name: ("sweep", "sweep_report") for f in dataclasses.fields(SweepOptions)
               if f.name not in ("sweep", "sweep_report")}}
"""Options that only one mode reads, and the mode flags that read them."""


def _check_modes(parser: argparse.ArgumentParser, values: dict) -> None:
    """An option given without the mode that reads it would be ignored: refuse it instead."""
    for name in sorted(values):
        modes = _MODE_OF.get(name)
        if modes and not any(values.get(mode) for mode in modes):
            wanted = " or ".join(flag_of(FIELDS[mode]) for mode in modes)
            parser.error(f"{flag_of(FIELDS[name])} goes with {wanted}; without it, it would be ignored")


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
