"""What a sweep will do, said before it does anything long: the plan, the estimate, the progress.

`python run.py --sweep MODEL` prints its plan at once (nothing heavy is imported to say it): the study, the
trials and the epoch cap, the data, the devices, the search space, and every default the plan chose. After
the first epoch of its first trial it estimates the study's time on this machine; after each trial it says
how many are done and what is left. All of this goes to stderr: stdout holds the sweep's result.

On the generated stand-in (`--data synthetic`, the default) a bare `--sweep` is a demonstration that
finishes: the paper's defaults are made for 29.1 s clips of real MTAT and run for days on a CPU, so the
options in `STAND_IN_SWEEP` that the user did not give are set for a sweep that ends in minutes and still
shows the Mel settings at work. The plan lists each such choice and the value the paper would use; the
trials' `config.yaml` records the values. On real data (`--data DIR`) nothing is changed.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from datamodules.datasets.mtat.reader import SYNTHETIC
from experiments.options import FIELDS_BY_NAME, NON_IDENTITY_OPTIONS, RunOptions, SweepOptions, flag_of
from infrastructure.audio import SAMPLE_RATE
from infrastructure.devices import gpu_count
from infrastructure.errors import ConfigError

if TYPE_CHECKING:
    from sweeps.spaces import SearchSpace
    from sweeps.storage import StorageTarget

STAND_IN_SWEEP: dict[str, object] = {
    # the data: 3.7 s clips (3^10 samples) instead of MTAT's 29.1 s, enough of them for a stable test AUC
    "synthetic_clips": 960, "synthetic_clip_samples": 59_049,
    # the budget: few, short trials
    "trials": 8, "max_epochs": 6,
    # what makes the LSTM learn in a few epochs: Adam, and batch-normalised log-Mel bands (the raw dB input
    # saturates the LSTM: see --input-norm); the paper's SGD at 0.01 on raw dB needs far more epochs
    "optimizer": "adam", "lr": 1e-3, "input_norm": True,
}
"""Options a bare sweep of the generated stand-in sets, unless given (on the command line or in a --config file),
where they apply (`_applies`)."""


def _applies(name: str, options: RunOptions) -> bool:
    """The optimiser is the stand-in's choice only under the paper's recipe (another recipe brings its own);
    the input normalisation is lstm_mel's option."""
    if name in ("optimizer", "lr"):
        return options.recipe == "paper"
    if name == "input_norm":
        return options.model == "lstm_mel"
    return True


@dataclass(frozen=True)
class Choice:
    """One default the plan chose: the option, its value here, and the value it has elsewhere."""

    name: str
    value: object
    usual: object

    def describe(self) -> str:
        f = FIELDS_BY_NAME[self.name]
        flag = flag_of(f)
        shown = flag if isinstance(self.value, bool) and self.value else f"{flag} {self.value}"
        return f"{shown} (otherwise {self.usual})"


def stand_in_defaults(options: RunOptions, settings: SweepOptions, given: set[str]
                      ) -> tuple[RunOptions, SweepOptions, list[Choice]]:
    """The options and sweep settings of a bare sweep of the stand-in, and the choices made (none on real data).

    An option the user gave, or tunes with --sweep-space, keeps the user's word.
    """
    if options.data != SYNTHETIC or options.dataset != "mtat":
        return options, settings, []
    kept = set(given) | _tuned(settings.sweep_space)
    choices = [Choice(name, value, _usual(name, options, settings)) for name, value in STAND_IN_SWEEP.items()
               if name not in kept and _applies(name, options) and _usual(name, options, settings) != value]
    run_changes = {c.name: c.value for c in choices if hasattr(options, c.name)}
    sweep_changes = {c.name: c.value for c in choices if not hasattr(options, c.name)}
    if sweep_changes:
        settings = SweepOptions(**{**_asdict(settings), **sweep_changes})
    return options.replace(**run_changes) if run_changes else options, settings, choices


def _tuned(sweep_space: str | None) -> set[str]:
    """The options a --sweep-space names (its errors are reported where the space is built)."""
    if not sweep_space:
        return set()
    try:
        text = sweep_space if sweep_space.lstrip().startswith("{") else Path(sweep_space).read_text()
        return set(json.loads(text))
    except (OSError, ValueError, TypeError):
        return set()


def _usual(name: str, options: RunOptions, settings: SweepOptions):
    return getattr(options, name) if hasattr(options, name) else getattr(settings, name)


def _asdict(settings: SweepOptions) -> dict:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def describe_data(options: RunOptions) -> str:
    if options.dataset == "mtg-jamendo":
        where = "its generated stand-in" if options.data == SYNTHETIC else options.data
        return f"MTG-Jamendo ({where}), split set {options.jamendo_split or 0}, {options.jamendo_subset or 'top50tags'}"
    if options.data == SYNTHETIC:
        seconds = options.synthetic_clip_samples / SAMPLE_RATE
        return (f"the generated MTAT stand-in: {options.synthetic_clips} clips of {seconds:.1f} s, {options.tags} tags, "
                f"{options.split} split (made once in {options.cache_dir}, then reused)")
    return f"MagnaTagATune in {options.data}: {options.tags} tags, {options.split} split"


def describe_devices(options: RunOptions) -> str:
    gpus = gpu_count()
    on_gpu = options.accelerator in ("gpu", "cuda") or (options.accelerator == "auto" and gpus > 0)
    where = "one GPU" if on_gpu else "the CPU"
    return f"each trial trains in one process on {where} (more throughput: start more workers)"


def format_plan(model: str, options: RunOptions, settings: SweepOptions, choices: list[Choice]) -> str:
    """The plan, as printed before any data is prepared."""
    lines = [f"sweep plan for {model} (nothing has run yet):",
             f"  trials   {settings.trials} in the whole study; this worker runs until the study has them",
             f"  epochs   at most {options.max_epochs} per trial"
             + ("; trials below the median are pruned" if settings.pruner == "median" else ""),
             f"  data     {describe_data(options)}",
             f"  devices  {describe_devices(options)}",
             f"  training {options.optimizer} lr {options.lr:g}, {options.recipe} recipe"
             + (", input batch-normalised" if options.input_norm else "")]
    if choices:
        lines.append("  chosen for the stand-in (give any of these to change it):")
        lines += [f"           {c.describe()}" for c in choices]
    return "\n".join(lines)


# ---- the study: which one a worker joins, and the space it searches -----------------------------------------
STUDY_NON_IDENTITY = NON_IDENTITY_OPTIONS | {"cache_dir"}
"""Options two workers of one study may set differently: a run's non-identity options, and the cache."""


def jsonable(value):
    return json.loads(json.dumps(value, default=str))


def study_identity(model: str, options: RunOptions, space: SearchSpace) -> dict:
    """What makes two workers' studies the same: model, search space, and every fixed option that
    changes results (paths of caches and run folders, loader processes and devices do not)."""
    fixed = {k: v for k, v in sorted(options.to_dict().items())
             if k not in STUDY_NON_IDENTITY and k not in space.names}
    return jsonable({"model": model, "space": space.to_dict(), "fixed": fixed})


def default_study_name(identity: dict) -> str:
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{identity['model']}-{digest}"


def single_process(options: RunOptions) -> RunOptions:
    devices = options.devices
    many = (isinstance(devices, list) and len(devices) > 1) or (isinstance(devices, int) and devices > 1) \
        or devices == -1 or options.num_nodes > 1
    if many:
        raise ConfigError("a sweep trains each trial in one process on one device; for more throughput start "
                          "more workers (e.g. a SLURM job array), not more --devices")
    return options.replace(devices=1 if devices == "auto" else devices)


@dataclass(frozen=True)
class StudyPlan:
    """The study a worker joins: its name, where it lives, what it searches, on clips of what length."""

    name: str
    target: StorageTarget
    space: SearchSpace
    identity: dict
    clip_samples: int


def plan_study(options: RunOptions, settings: SweepOptions, fixed=()) -> StudyPlan:
    """The study and its space, worked out without Optuna or Lightning (the plan names them at once).

    A malformed --sweep-space, or settings no trial could train with, stop here, before any data is prepared.
    Imported here: `--print-config` reads this module's stand-in defaults without them.
    """
    from experiments.resolve import resolve
    from sweeps.spaces import build_space, parse_overrides
    from sweeps.storage import parse_storage, study_dir

    options = single_process(options)
    overrides = parse_overrides(settings.sweep_space)
    clip_samples = resolve(options).clip_samples
    space = build_space(options.model, options, clip_samples, fixed=fixed, overrides=overrides)
    identity = study_identity(options.model, options, space)
    name = settings.study_name or default_study_name(identity)
    return StudyPlan(name, parse_storage(settings.storage, study_dir(options.runs_root, name)), space, identity,
                     clip_samples)


def describe_study(plan: StudyPlan) -> list[str]:
    """The plan's lines for the study and its space (and the choices the clip length rules out)."""
    return [f"  study    {plan.name} in {plan.target.describe()}", f"  space    {plan.space.describe()}",
            *(f"           {note}" for note in plan.space.notes)]


def say(line: str) -> None:
    """One line on stderr, above any progress bar being drawn there (tqdm's write, once tqdm is in use)."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        tqdm.tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


@dataclass
class SweepProgress:
    """Trials done of total and the time left, from what this worker has measured so far."""

    total: int
    max_epochs: int
    done_before: int = 0
    started: float = field(default_factory=time.monotonic)
    trial_seconds: list[float] = field(default_factory=list)
    estimated: bool = False

    def first_epoch(self, seconds: float) -> None:
        """After the first epoch of this worker's first trial: the study's time, at most."""
        if self.estimated:
            return
        self.estimated = True
        left = (self.total - self.done_before) * self.max_epochs * seconds
        say(f"sweep: an epoch takes about {_duration(seconds)} here; the {self.total - self.done_before} trials left "
            f"take at most {_duration(left)} on this machine (less when trials are pruned or stop early)")

    def trial_done(self, done: int, trial_seconds: float, best: float | None) -> None:
        self.trial_seconds.append(trial_seconds)
        left = max(self.total - done, 0)
        mean = sum(self.trial_seconds) / len(self.trial_seconds)
        best_text = f", best so far {best:.4f}" if best is not None else ""
        eta = f"; about {_duration(left * mean)} left" if left else ""
        say(f"sweep: {done} of {self.total} trials done{best_text}{eta}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
