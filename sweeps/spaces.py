"""Search spaces of `run.py --sweep MODEL`: which training options a sweep tunes, and over what values.

A space is a tuple of `Param`s, each naming one of run.py's options by its dest (`hop_length`,
`segments_per_clip`, `lr`, ...). A trial's parameters are merged into the run's options, so a
trial is an ordinary run with some options chosen by the sampler.

Each model's space and first trials are data in its registry entry (lightning_modules/registry.py
`ModelSpec.space` and `baselines`, in `--sweep-space`'s form); an entry that declares no space gets
the default one (`default_space_values`: Mel settings for Mel models, dropout, learning rate,
decay). `SPACES` and `BASELINES` follow the registry. The spaces and the paper's settings they contain:

* `lstm_mel` (§4.4.2, "sequence length decisive"): FFT window, hop, Mel bands and segments per
  clip set the LSTM's sequence length (frames per segment = (clip // hop + 1) // segments). The
  paper's 0.861 run (FFT 2048, hop 2560, one segment) and its best, 0.87 (FFT 2048, hop 512,
  4 segments of 227 frames, Table 3), are both points of the space and are enqueued as the first
  trials (`BASELINES`); learning rate and the global decay factor are tuned too.
* `mel_cnn`: FFT, hop (the paper's 1792 among them), Mel bands, dropout, learning rate, decay.
* `sample_cnn`, `sample_cnn_frames`: learning rate, dropout, decay (the input is fixed).
* Won et al.'s `short_chunk_cnn`, `short_chunk_resnet`, `tagging_transformer`: hop (and Mel bands where the
  network takes any), dropout, learning rate, decay; `harmonic_cnn` (its filters are learned): learning rate,
  dropout, decay.
* `fcn`, `crnn`, `musicnn`: Mel bands (96, 128), dropout, learning rate, decay; `sample_cnn_se`: as
  `sample_cnn` (no baselines are enqueued for these: their publications' recipes are not the suite's).

How a space meets the data and the command line (`build_space`):

1. Options given on the command line are fixed for all trials, so their parameters leave the
   space (`--n-mels 64` fixes the Mel bands; `--lr` fixes the learning rate).
2. `--sweep-space JSON` (inline JSON or a JSON file) replaces, adds or removes parameters:
   `{"hop_length": [256, 512], "lr": {"low": 1e-3, "high": 0.1, "log": true},
   "local_decay": [0, 1e-6, 1e-5], "global_decay": null}`. A list is a categorical choice; a
   dict is a range (`low`, `high`, optional `log`, `step`, `type` "int" or "float"; the type
   defaults to int when both bounds are integers); null removes the parameter.
3. The space adapts to the dataset's clip length (`adapt_to_clip`): every combination of the
   categorical shape parameters (FFT, hop, Mel bands, segments) is checked against the
   network and the segment layout, and choices that would make combinations impossible (too
   few frames for the network, segments shorter than the FFT's reflect padding) are dropped,
   the worst offender first. On MTAT's 29.1 s clips nothing is dropped; on the 3.7 s clips of
   the tests the longest hops go. A trial whose parameters are still impossible (a range
   override, say) fails before training and does not count towards `--trials`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from experiments.options import NOT_TUNABLE, RUN_OPTION_NAMES, RunOptions
from experiments.resolve import mel_settings, network_overrides
from infrastructure.errors import ConfigError
from lightning_modules.registry import (
    MODELS,
    ModelSpec,
    build_network,
    input_shape,
    model_spec,
    network_config,
    segment_layout,
)

CATEGORICAL, FLOAT, INT = "categorical", "float", "int"
KINDS = (CATEGORICAL, FLOAT, INT)

SHAPE_PARAMS = ("n_fft", "hop_length", "n_mels", "segments_per_clip")
"""Parameters that change the network's input shape (and so can make a combination impossible)."""

@dataclass(frozen=True)
class Param:
    """One tuned option: a categorical choice or a (log-)uniform range of floats or integers."""

    name: str
    kind: str
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"search space: {self.name}: unknown kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.kind == CATEGORICAL:
            if not self.choices:
                raise ConfigError(f"search space: {self.name}: a categorical parameter needs at least one choice")
            for value in self.choices:
                if value is not None and not isinstance(value, (bool, int, float, str)):
                    raise ConfigError(f"search space: {self.name}: choice {value!r} is not a number, string or null")
            if len(set(map(json.dumps, self.choices))) != len(self.choices):
                raise ConfigError(f"search space: {self.name}: repeated choices in {list(self.choices)}")
            return
        if self.low is None or self.high is None:
            raise ConfigError(f"search space: {self.name}: a range needs 'low' and 'high'")
        for bound in (self.low, self.high):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
                raise ConfigError(f"search space: {self.name}: bounds must be finite numbers, got {bound!r}")
        if self.kind == INT and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ConfigError(f"search space: {self.name}: an int range needs integer bounds")
        if self.low > self.high:
            raise ConfigError(f"search space: {self.name}: low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ConfigError(f"search space: {self.name}: a log range needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ConfigError(f"search space: {self.name}: 'step' and 'log' cannot be combined")

    def suggest(self, trial):
        """Ask an Optuna trial for this parameter's value."""
        if self.kind == CATEGORICAL:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == INT:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def distribution(self):
        """The Optuna distribution `suggest` samples from (for `optuna.create_trial`)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == CATEGORICAL:
            return CategoricalDistribution(list(self.choices))
        if self.kind == INT:
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def contains(self, value) -> bool:
        if self.kind == CATEGORICAL:
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def to_dict(self) -> dict:
        if self.kind == CATEGORICAL:
            return {"name": self.name, "kind": self.kind, "choices": list(self.choices)}
        out = {"name": self.name, "kind": self.kind, "low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        return out

    @classmethod
    def from_dict(cls, values: dict) -> Param:
        values = dict(values)
        values["choices"] = tuple(values.get("choices", ()))
        return cls(**values)

    def describe(self) -> str:
        if self.kind == CATEGORICAL:
            return f"{self.name} in {list(self.choices)}"
        scale = "log " if self.log else ""
        step = f" step {self.step}" if self.step is not None else ""
        return f"{self.name} {scale}{self.kind} [{self.low}, {self.high}]{step}"


def categorical(name: str, choices) -> Param:
    return Param(name, CATEGORICAL, tuple(choices))


def log_float(name: str, low: float, high: float) -> Param:
    return Param(name, FLOAT, low=low, high=high, log=True)


@dataclass(frozen=True)
class SearchSpace:
    """The tuned parameters of one model's sweep, in the order they are suggested."""

    model: str
    params: tuple[Param, ...]
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ConfigError(f"search space of {self.model}: a parameter appears twice in {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def get(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def suggest(self, trial) -> dict:
        """The trial's parameters (for a retried or enqueued trial, the ones it already holds)."""
        return {p.name: p.suggest(trial) for p in self.params}

    def distributions(self) -> dict:
        return {p.name: p.distribution() for p in self.params}

    def contains(self, params: dict) -> bool:
        """True when `params` names exactly this space's parameters with values inside it."""
        return set(params) == set(self.names) and all(self.get(k).contains(v) for k, v in params.items())

    def without(self, names) -> SearchSpace:
        names = set(names)
        return SearchSpace(self.model, tuple(p for p in self.params if p.name not in names), self.notes)

    def with_param(self, param: Param) -> SearchSpace:
        params = list(self.params)
        for i, p in enumerate(params):
            if p.name == param.name:
                params[i] = param
                break
        else:
            params.append(param)
        return SearchSpace(self.model, tuple(params), self.notes)

    def to_dict(self) -> dict:
        return {"model": self.model, "params": [p.to_dict() for p in self.params]}

    @classmethod
    def from_dict(cls, values: dict) -> SearchSpace:
        return cls(values["model"], tuple(Param.from_dict(p) for p in values["params"]))

    def describe(self) -> str:
        return "; ".join(p.describe() for p in self.params) or "(empty: every option is fixed)"


def default_space_values(spec: ModelSpec) -> tuple[tuple[str, object], ...]:
    """The space of a model whose registry entry declares none, as `--sweep-space` data.

    A Mel model tunes its hop (half, its own, double) and its Mel bands (64, 96, 128 and its own); every model its
    dropout (its own, 0.25 and 0.5; when the network takes one), the learning rate and the global decay. For a
    waveform model that is the paper's SampleCNN space (learning rate, dropout, decay), which those models use.
    """
    values: list[tuple[str, object]] = []
    if spec.frontend is not None:
        hop, bands = spec.frontend.hop_length, spec.frontend.n_mels
        values += [("hop_length", sorted({max(1, hop // 2), hop, 2 * hop})), ("n_mels", sorted({64, 96, 128, bands}))]
    values.append(("lr", {"low": 1e-3, "high": 1e-1, "log": True}))
    dropout = dict(spec.network_defaults).get("dropout")
    if dropout is not None:
        values.append(("dropout", sorted({float(dropout), 0.25, 0.5})))
    values.append(("global_decay", [0.1, 0.2, 0.5]))
    return tuple(values)


def space_of(model: str) -> SearchSpace:
    """The search space of registry model `model`: its entry's own (`ModelSpec.space`) or the default one."""
    spec = model_spec(model)
    values = spec.space if spec.space is not None else default_space_values(spec)
    space = SearchSpace(spec.name, ())
    for name, value in values:
        if name in space.names:
            raise ConfigError(f"the search space of model {spec.name} (its registry entry) names {name} twice")
        try:
            space = apply_overrides(space, {name: value}, RUN_OPTION_NAMES)
        except ConfigError as error:
            raise ConfigError(f"model {spec.name}'s registry entry: {error}") from None
    return space


def baseline_points(model: str) -> tuple[dict, ...]:
    """The points a new study of `model` enqueues first: its entry's `baselines`, else its own settings (Mel
    settings, segments per clip, dropout) for the parameters of its space (the run's options fill in the rest)."""
    spec = model_spec(model)
    if spec.baselines is not None:
        return tuple(spec.baselines)
    own = {"segments_per_clip": spec.segments_per_clip, "dropout": dict(spec.network_defaults).get("dropout")}
    if spec.frontend is not None:
        own.update(n_fft=spec.frontend.n_fft, hop_length=spec.frontend.hop_length, n_mels=spec.frontend.n_mels)
    names = space_of(model).names
    return ({k: v for k, v in own.items() if k in names and v is not None},)


class _PerModel(Mapping):
    """Model name -> value, for every registered model (follows the registry)."""

    def __init__(self, value_of) -> None:
        self._value_of = value_of

    def __getitem__(self, model: str):
        if model not in MODELS:
            raise KeyError(model)
        return self._value_of(model)

    def __iter__(self) -> Iterator[str]:
        return iter(list(MODELS))

    def __len__(self) -> int:
        return len(MODELS)


SPACES: Mapping[str, SearchSpace] = _PerModel(space_of)
"""Every registered model's search space (before the command line and the clip length change it)."""

BASELINES: Mapping[str, tuple[dict, ...]] = _PerModel(baseline_points)
"""The paper's own settings (each model's registry entry): enqueued as a new study's first trials, restricted to the
tuned parameters."""


def parse_overrides(text: str | None) -> dict:
    """`--sweep-space`: inline JSON or the path of a JSON file, mapping option names to choices/ranges/null."""
    if not text:
        return {}
    source = "--sweep-space"
    stripped = text.strip()
    if not stripped.startswith("{"):
        path = Path(stripped).expanduser()
        if not path.is_file():
            raise ConfigError(f"--sweep-space: {text!r} is neither a JSON object nor an existing JSON file")
        source, stripped = str(path), path.read_text()
    try:
        values = json.loads(stripped)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{source}: not valid JSON ({error})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a JSON object of option names, got {type(values).__name__}")
    return values


def _param_from_override(name: str, value) -> Param:
    if isinstance(value, list):
        return categorical(name, value)
    if isinstance(value, dict):
        unknown = set(value) - {"low", "high", "log", "step", "type"}
        if unknown:
            raise ConfigError(f"search space: {name}: unknown range keys {sorted(unknown)} "
                              "(use low, high, log, step, type)")
        low, high = value.get("low"), value.get("high")
        kind = value.get("type") or (INT if isinstance(low, int) and isinstance(high, int)
                                     and not isinstance(low, bool) else FLOAT)
        if kind not in (INT, FLOAT):
            raise ConfigError(f"search space: {name}: range type must be 'int' or 'float', got {kind!r}")
        return Param(name, kind, low=low, high=high, log=bool(value.get("log", False)), step=value.get("step"))
    raise ConfigError(f"search space: {name}: give a list of choices, a range object or null, got {value!r}")


def apply_overrides(space: SearchSpace, overrides: dict, known_options) -> SearchSpace:
    """Replace, add (a list or range) or remove (null) parameters; names must be tunable run.py options."""
    known = set(known_options)
    for name, value in overrides.items():
        if name not in known:
            raise ConfigError(f"search space: {name!r} is not a run.py option (options use underscores: "
                              "hop_length, segments_per_clip, lr, ...)")
        if name in NOT_TUNABLE:
            raise ConfigError(f"search space: {name!r} describes the data or the machine, not the model; "
                              "pass it as an ordinary option instead")
        space = space.without([name]) if value is None else space.with_param(_param_from_override(name, value))
    return space


def infeasibility(model: str, options: RunOptions, params: dict, clip_samples: int) -> str | None:
    """Why these parameters cannot train on clips of `clip_samples` (None when they can).

    Builds what a run would build (Mel settings, segment layout, network, on the meta device so
    nothing is allocated) and reports the first ConfigError, or segments too short for the FFT.
    """
    merged = options.replace(**params)
    try:
        spec = model_spec(model)
        frontend = mel_settings(spec, merged)
        layout = segment_layout(spec, clip_samples, frontend, merged.segments_per_clip, merged.train_crop,
                                merged.random_crops_per_clip)
        layout.check_fits(clip_samples)
        if frontend is not None and layout.segment_samples < frontend.min_samples:
            return (f"segments of {layout.segment_samples} samples are shorter than FFT {frontend.n_fft} "
                    f"with reflect padding allows ({frontend.min_samples})")
        config = network_config(spec, input_shape(frontend, layout), merged.n_tags, **network_overrides(merged))
        return network_misfit(config)
    except ConfigError as error:
        return str(error)


_MISFITS: dict[str, str | None] = {}


def network_misfit(config: dict) -> str | None:
    """Why the network a config describes cannot be built (None when it can), building it on the meta device.

    Remembered by config: the combinations of a space share far fewer network inputs than they are many.
    """
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _MISFITS:
        import torch  # here: the plan lists its first lines before torch is loaded

        try:
            with torch.device("meta"):
                build_network(config)
            _MISFITS[key] = None
        except ConfigError as error:
            _MISFITS[key] = str(error)
    return _MISFITS[key]


def adapt_to_clip(space: SearchSpace, options: RunOptions, clip_samples: int) -> SearchSpace:
    """Drop categorical shape choices until every combination of them can train on these clips.

    Greedy: while some combination is impossible, drop the choice with the largest share of
    impossible combinations (ties: the later, larger choice). Raises ConfigError when no
    combination is possible. What was dropped and why is kept in the returned space's `notes`.
    """
    grid = [p for p in space.params if p.name in SHAPE_PARAMS and p.kind == CATEGORICAL]
    notes = list(space.notes)
    base = {p.name: None for p in space.params if p.kind != CATEGORICAL and p.name in SHAPE_PARAMS}
    base_options = options.replace(**base)
    cache: dict[tuple, str | None] = {}

    def reason(combo: tuple) -> str | None:
        if combo not in cache:
            cache[combo] = infeasibility(space.model, base_options, dict(zip([p.name for p in grid], combo)),
                                         clip_samples)
        return cache[combo]

    choices = [list(p.choices) for p in grid]
    while True:
        combos = list(itertools.product(*choices))
        bad = {c: reason(c) for c in combos if reason(c) is not None}
        if not bad:
            break
        if len(bad) == len(combos):
            example = next(iter(bad.values()))
            raise ConfigError(f"no combination of the {space.model} search space can train on clips of "
                              f"{clip_samples} samples (e.g. {example}); narrow it with --sweep-space")
        worst = None
        for i, values in enumerate(choices):
            if len(values) < 2:
                continue
            for j, value in enumerate(values):
                with_value = [c for c in combos if c[i] == value]
                share = sum(c in bad for c in with_value) / len(with_value)
                key = (share, j)
                if worst is None or key > worst[0]:
                    worst = (key, i, value)
        _, i, value = worst
        example = next(r for c, r in bad.items() if c[i] == value)
        notes.append(f"{grid[i].name} {value} dropped for {clip_samples}-sample clips: {example}")
        choices[i].remove(value)
    adapted = space
    for param, values in zip(grid, choices):
        adapted = adapted.with_param(categorical(param.name, values))
    return SearchSpace(adapted.model, adapted.params, tuple(notes))


PAPER_DECAY_PARAMS = ("global_decay", "local_decay", "max_restarts", "patience")


def for_schedule(space: SearchSpace, options: RunOptions) -> SearchSpace:
    """The space under the run's recipe: the spaces are written for the paper's SGD with its two-level decay; under
    another schedule (`--recipe won2020|modern`) the decay's parameters do nothing and are dropped, and the learning
    rate is searched over a decade either side of the recipe's rate (Adam's 1e-4 and AdamW's 1e-3 lie outside SGD's
    1e-3..1e-1). Recipe parameters (`mixup_alpha`, `warmup`, `freq_mask`, `ema_decay`...) join with --sweep-space."""
    if options.schedule == "paper":
        return space
    space = space.without(PAPER_DECAY_PARAMS)
    if space.get("lr") is not None:
        space = space.with_param(log_float("lr", options.lr / 10, options.lr * 10))
    return space


def build_space(model: str, options: RunOptions, clip_samples: int, fixed=(), overrides: dict | None = None) -> SearchSpace:
    """The space a sweep of `model` tunes: defaults, minus options `fixed` on the command line,
    with `overrides` (`--sweep-space`) applied, adapted to the clip length."""
    space = space_of(model)
    overrides = dict(overrides or {})
    clash = sorted(set(fixed) & {k for k, v in overrides.items() if v is not None})
    if clash:
        raise ConfigError(f"{', '.join('--' + c.replace('_', '-') for c in clash)} given on the command line "
                          "(fixed for all trials) and tuned by --sweep-space: choose one")
    space = for_schedule(space, options)
    space = space.without(fixed)
    space = apply_overrides(space, overrides, RUN_OPTION_NAMES)
    return adapt_to_clip(space, options, clip_samples)


def baselines(space: SearchSpace, options: RunOptions) -> list[dict]:
    """The paper's settings for this space's model, as points of the space.

    Parameters the paper's point does not name take the run's option value; points that then
    fall outside the space (a choice dropped or overridden) are left out. Under another recipe's schedule the
    points' SGD rate and decay give way to the recipe's rate (the publication's settings under that recipe).
    """
    out = []
    for point in baseline_points(space.model):
        if options.schedule != "paper":
            point = {k: v for k, v in point.items() if k not in (*PAPER_DECAY_PARAMS, "lr")}
        params = {name: point.get(name, getattr(options, name)) for name in space.names}
        if space.contains(params) and params not in out:
            out.append(params)
    return out
