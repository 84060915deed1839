"""Every option of `run.py`, declared once: typed dataclasses grouped by concern.

Each field is one option: its type, default, choices (imported from the module that owns them),
help text, and two properties that the rest of the suite reads from here instead of keeping its
own lists:

* `identity`: part of what a run *is*. Two runs that differ only in non-identity options (where
  files go, how many loader processes, which devices, how often to log) share a run folder, so
  rerunning a command with another `--num-workers` resumes the same run.
* `tunable`: a sweep may tune it (`--sweep-space`); data, machine and bookkeeping options are not.

`RunOptions` holds everything a training run or an evaluation needs; the mode options (what to
do: download, tag, evaluate, resume, sweep) are parsed beside it but are not part of a run. The
parser (`build_parser`), the sets above, `--print-config`, the `config.yaml` of every run folder
and the option reference (docs/reference/options.md) all follow from these declarations.
Experiment files are YAML with the options' names as keys (`lr: 0.001`), read by `experiments.cli`
(checked as flags are).

Model-specific defaults (batch size, Mel settings, segments per clip) live in the model
registry; here those options default to None, "the model's value".
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from callbacks.schedule_names import GLOBAL_DECAY_SCHEDULES, LOCAL_DECAY_FORMULAS, SCHEDULES
from datamodules.datasets.jamendo.splits import QUALITIES as JAMENDO_QUALITIES
from datamodules.datasets.jamendo.splits import SPLITS as JAMENDO_SPLITS
from datamodules.datasets.jamendo.splits import SUBSETS as JAMENDO_SUBSETS
from datamodules.datasets.mtat.reader import SPLITS, TAG_VOCABULARIES
from datamodules.datasets.mtat.standin import DEFAULT_N_CLIPS
from datamodules.mel_config import BACKENDS, COMPRESSIONS
from datamodules.segments import TRAIN_CROPS
from experiments.legacy import LEGACY_KEYS, compatible_dict, ignored_saved_keys
from experiments.recipes import RECIPES
from experiments.reporting.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from infrastructure.audio import MTAT_CLIP_SAMPLES
from infrastructure.errors import ConfigError
from infrastructure.locations import default_cache_root
from lightning_modules.optimization import NONFINITE_ACTIONS, OPTIMIZERS
from lightning_modules.registry import MODELS, model_spec

LOGGERS = ("wandb", "csv", "tensorboard", "none")
STRATEGIES = ("auto", "ddp")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
DEFAULT_LOG_EVERY_N_STEPS = 10


# ---- value types --------------------------------------------------------------------------------
class OptionValueError(argparse.ArgumentTypeError, ValueError):
    """A bad option value: argparse shows its message for flags; `experiments.cli` names the file for --config."""


@dataclass(frozen=True)
class Interval:
    """An option's valid values, written as in mathematics: "(0, inf)", "[0, 1)", "[1, inf)".

    Declared with the option (``valid=``) and checked wherever a value comes from: a flag, a --config
    file, a sweep's search space, a saved configuration. A list-valued option (--stage-epochs) checks
    every entry.
    """

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> Interval:
        match = re.fullmatch(r"\s*([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(inf|[-+0-9.e]+)\s*([\])])\s*", text)
        if match is None:
            raise ValueError(f"not an interval: {text!r}")
        opening, low, high, closing = match.groups()
        return cls(float(low), float(high), opening == "[", closing == "]")

    def __contains__(self, value) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def describe(self) -> str:
        """'> 0', '>= 1', 'in [0, 1)'."""
        low = _number(self.low)
        if math.isinf(self.high):
            return f"{'>=' if self.low_closed else '>'} {low}"
        return f"in {'[' if self.low_closed else '('}{low}, {_number(self.high)}{']' if self.high_closed else ')'}"

    def check(self, value) -> None:
        """OptionValueError("must be > 0, got -0.01") unless every number in `value` lies in the interval."""
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, (int, float)) and not isinstance(item, bool) and item not in self:
                raise OptionValueError(f"must be {self.describe()}, got {_number(item)}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


def _number_list(text, kind: type, example: str) -> list:
    if isinstance(text, (list, tuple)):
        return [kind(v) for v in text]
    try:
        return [kind(v) for v in str(text).strip("[]").split(",") if v.strip()]
    except ValueError:
        raise OptionValueError(f"expected comma-separated {example}, got {text}") from None


def int_list(text) -> list[int]:
    """'80,20,20' (or a YAML list) -> [80, 20, 20]."""
    return _number_list(text, int, "integers such as 80,20,20")


def float_list(text) -> list[float]:
    """'1e-3,1e-4' (or a YAML list) -> [0.001, 0.0001]."""
    return _number_list(text, float, "numbers such as 1e-3,1e-4,1e-5")


def registered_model(name: str) -> str:
    """A model of the registry (the error names the closest one): checked when parsed, so that models registered
    after this module was imported count too."""
    try:
        return model_spec(str(name)).name
    except ConfigError as error:
        raise OptionValueError(str(error)) from None


def fraction_or_count(text: str) -> float | int:
    value = float(text)
    return int(value) if value > 1 and value.is_integer() else value


def parse_devices(text):
    """--devices: 'auto', a count (-1: every GPU), or a list of GPU indices ('0,1' or '[0,1]')."""
    if isinstance(text, (int, list)) and not isinstance(text, bool):
        return text
    text = str(text)
    if text == "auto":
        return "auto"
    try:
        if text.startswith("[") or "," in text:
            devices = [int(x) for x in text.strip("[]").split(",") if x.strip()]
            if devices and min(devices) >= 0:
                return devices
        elif int(text) > 0 or int(text) == -1:
            return int(text)
    except ValueError:
        pass
    raise ConfigError(f"--devices {text}: expected auto, a positive count, -1 (every GPU) or a list of GPU indices "
                      "such as 0,1")


def option(default, help: str, *, type=None, choices=None, metavar=None, identity: bool = True,
           tunable: bool = True, flag: str | None = None, action: str | None = None,
           valid: str | None = None, essential: str | None = None, known_as: tuple[str, ...] = ()):
    """A dataclass field that is also a command-line option (see the module docstring).

    `valid`: the values a numeric option accepts, as an `Interval` ("(0, inf)"); None is always accepted
    where the default is None ("the model's value").
    `essential`: a one-line summary: the option is listed, with it, by the short `--help`.
    `known_as`: names other tools use for this option (`learning_rate`): an unknown option with one of
    them is answered with this option's name.
    """
    return field(default=default, metadata={
        "help": help, "type": type, "choices": choices, "metavar": metavar, "identity": identity,
        "tunable": tunable, "flag": flag, "action": action,
        "valid": Interval.parse(valid) if valid else None, "essential": essential, "known_as": tuple(known_as)})


def check_values(instance) -> None:
    """ConfigError naming the first option of `instance` (a group of options) whose value is out of its range."""
    for f in fields(instance):
        interval = f.metadata.get("valid")
        value = getattr(instance, f.name)
        if interval is not None and value is not None:
            try:
                interval.check(value)
            except OptionValueError as error:
                raise ConfigError(f"{flag_of(f)} {error}") from None


# ---- run options, by concern ---------------------------------------------------------------------
@dataclass(frozen=True)
class ModelOptions:
    """model: which architecture, and the network options that are not the model's defaults."""

    model: str | None = option(None, "architecture: " + "; ".join(f"{n} ({s.table})" for n, s in MODELS.items()),
                               type=registered_model, tunable=False,
                               essential="train and test this model (see --summary for its layers)",
                               known_as=("arch", "architecture", "network", "net"))
    dropout: float | None = option(None, "override the network's dropout rate", type=float, valid="[0, 1)",
                                   known_as=("drop", "dropout_rate", "p_dropout"))
    width: int | None = option(None, "base channel width of Won et al.'s networks (their 128), e.g. smaller for quick "
                               "CPU tries (default: the model's)", type=int, valid="[1, inf)")
    input_norm: bool = option(False, "lstm_mel: batch-normalise the log-Mel bands before the LSTM (not in Table 3; "
                              "the raw dB input saturates the LSTM: recommended)", action="store_true")


@dataclass(frozen=True)
class DataOptions:
    """data: which clips, tags and split, and how they are prepared and loaded."""

    data: str = option("synthetic", "MTAT folder (annotations_final.csv + mp3/0..f/), or 'synthetic' to generate "
                       "and use the stand-in dataset", metavar="DIR|synthetic", tunable=False,
                       essential="an MTAT folder, or 'synthetic' for the generated stand-in (the default)",
                       known_as=("data_dir", "dataset_dir", "root", "path"))
    cache_dir: str | None = option(None, "where decoded waveforms and the synthetic dataset are kept "
                                   "(default: $MTAT_TAGGING_CACHE or ~/.cache/mtat-tagging)", metavar="DIR", tunable=False)
    tags: str = option("paper", "tag vocabulary: 'paper' merges synonyms then keeps the top 50; 'standard' is the "
                       "unmerged top 50 of the literature, for comparison with published results",
                       choices=TAG_VOCABULARIES, tunable=False,
                       essential="tag vocabulary: paper (merged synonyms) or standard (the literature's top 50)")
    n_tags: int = option(50, "tags kept by the vocabulary", type=int, tunable=False, valid="[1, inf)")
    split: str = option("folder", "'folder': MTAT folders 0-b train, c valid, d-f test (the paper's); 'clean': the "
                        "Lee/Won lists (real MTAT only)", choices=SPLITS, tunable=False,
                        essential="folder (the paper's) or clean (Won et al.'s)")
    synthetic_clips: int = option(DEFAULT_N_CLIPS, "clips in the synthetic dataset", type=int,
                                  tunable=False, valid="[1, inf)")
    synthetic_clip_samples: int = option(MTAT_CLIP_SAMPLES, "clip length of the synthetic dataset in samples at "
                                         "16 kHz (MTAT's)", type=int, tunable=False, valid="[1, inf)")
    synthetic_seed: int = option(0, "seed of the synthetic dataset", type=int, tunable=False, valid="[0, 4294967295]")
    dataset: str = option("mtat", "which benchmark --data holds: MagnaTagATune, or MTG-Jamendo (split TSVs + audio "
                          "folders 00-99; with --data synthetic, its generated stand-in)", choices=("mtat", "mtg-jamendo"),
                          tunable=False, essential="mtat, or mtg-jamendo")
    jamendo_split: int | None = option(None, "MTG-Jamendo split set (default 0, the one results are reported on; "
                                       "--split is MTAT's)", type=int, choices=JAMENDO_SPLITS, tunable=False)
    jamendo_subset: str | None = option(None, "MTG-Jamendo tag subset, all of its tags (default top50tags; --tags and "
                                        "--n-tags are MTAT's)", choices=JAMENDO_SUBSETS, tunable=False)
    jamendo_quality: str | None = option(None, "MTG-Jamendo audio read and downloaded: low (mono VBR MP3, 156 GB; the "
                                         "default) or full (320 kbit/s stereo, 508 GB)", choices=JAMENDO_QUALITIES,
                                         tunable=False)
    jamendo_meta: str | None = option(None, "folder with MTG-Jamendo's split TSVs (splits/ or data/splits/ inside; "
                                      "default: --data)", metavar="DIR", tunable=False)
    excerpt_seconds: float | None = option(None, "MTG-Jamendo: store only the middle S seconds of each track (30: "
                                           "~53 GB instead of ~435 GB; default: whole tracks)", type=float,
                                           metavar="S", tunable=False, valid="(0, inf)")
    jamendo_clip_samples: int | None = option(None, "MTG-Jamendo: the window whole-clip models (mel_cnn, lstm_mel, "
                                              f"sample_cnn) read, in samples (default {MTAT_CLIP_SAMPLES}, MTAT's "
                                              "29.1 s clip); chunk models read their own chunk", type=int,
                                              tunable=False, valid="[1, inf)")
    synthetic_tracks: int | None = option(None, "tracks in the generated MTG-Jamendo stand-in (default 200)",
                                          type=int, tunable=False, valid="[1, inf)")
    synthetic_min_seconds: float | None = option(None, "shortest track of the MTG-Jamendo stand-in (default 20)",
                                                 type=float, tunable=False, valid="(0, inf)")
    synthetic_max_seconds: float | None = option(None, "longest track of the MTG-Jamendo stand-in (default 90)",
                                                 type=float, tunable=False, valid="(0, inf)")
    num_workers: int | None = option(None, "loader processes per training process (default: its share of the "
                                     "usable cores - 1, at most 8)", type=int, identity=False, tunable=False,
                                     valid="[0, inf)", known_as=("workers", "loader_workers"))
    prepare_workers: int | None = option(None, "decoding processes (default: all cores)", type=int,
                                         identity=False, tunable=False, valid="[1, inf)")


@dataclass(frozen=True)
class MelOptions:
    """Mel frontend and segments: computed on the batch's device; None means the model's value."""

    n_fft: int | None = option(None, "FFT window (mel_cnn, lstm_mel: 2048)", type=int, valid="[2, inf)",
                               known_as=("fft", "win_length", "window", "fft_size"))
    hop_length: int | None = option(None, "hop between frames (mel_cnn: 1792, lstm_mel: 512)", type=int,
                                    valid="[1, inf)", known_as=("hop", "hop_size", "stride"))
    n_mels: int | None = option(None, "Mel bands (128)", type=int, valid="[1, inf)",
                                known_as=("mels", "num_mels", "mel_bins", "n_mel"))
    f_min: float | None = option(None, "lowest frequency in Hz (0)", type=float, valid="[0, inf)")
    f_max: float | None = option(None, "highest frequency in Hz (8000, the Nyquist frequency)", type=float,
                                 valid="(0, inf)")
    mel_compression: str | None = option(None, "amplitude compression (db)", choices=COMPRESSIONS)
    mel_backend: str | None = option(None, "library computing the Mel (nnaudio)", choices=BACKENDS)
    segments_per_clip: int | None = option(None, "segments each clip is cut into; predictions are averaged per clip "
                                           "(lstm_mel: 4)", type=int, valid="[1, inf)")
    train_crop: str | None = option(None, "training sees the evaluation segments ('fixed') or random crops of that "
                                    "length ('random'); default: the model's", choices=TRAIN_CROPS)
    random_crops_per_clip: int | None = option(None, "with --train-crop random: crops drawn from each clip per "
                                               "training epoch (every recipe sets 1: an epoch is one pass over the "
                                               "training clips; unset in runs made before, which drew "
                                               "--segments-per-clip)", type=int, valid="[1, inf)")


@dataclass(frozen=True)
class OptimOptions:
    """optimisation (paper §4.5): optimiser, batch, epochs, the two-level decay, model selection."""

    optimizer: str = option("sgd", "'sgd' (the paper's), 'adam' (much faster for lstm_mel; try --lr 0.001) or 'adamw' "
                            "(decoupled weight decay; the modern recipe's)",
                            choices=OPTIMIZERS, essential="sgd (the paper's), adam or adamw",
                            known_as=("optim", "opt", "optimiser"))
    lr: float = option(0.01, "initial learning rate", type=float, valid="(0, inf)", essential="initial learning rate",
                       known_as=("learning_rate", "learning-rate", "base_lr", "lr0"))
    momentum: float = option(0.9, "SGD momentum", type=float, valid="[0, 1)")
    weight_decay: float = option(0.0, "L2 weight decay", type=float, valid="[0, inf)", known_as=("wd", "l2", "decay"))
    nesterov: bool = option(False, "Nesterov momentum", action="store_true")
    batch_size: int | None = option(None, "segments per batch (the paper is silent; default: the model's, see "
                                    "--summary)", type=int, valid="[1, inf)",
                                    essential="segments per batch (default: the model's)",
                                    known_as=("batch", "bs", "train_batch_size"))
    eval_batch_size: int | None = option(None, "segments per evaluation batch", type=int, valid="[1, inf)")
    max_epochs: int = option(100, "upper bound on epochs", type=int, valid="[1, inf)",
                             essential="upper bound on epochs", known_as=("epochs", "num_epochs", "n_epochs", "epoch"))
    local_decay: float = option(1e-6, "formula (1) decay per batch, reset each epoch (0 turns it off)", type=float,
                                valid="[0, inf)")
    local_decay_formula: str = option("paper", "'paper': compounding, as printed; 'keras': lr0 / (1 + d * i)",
                                      choices=LOCAL_DECAY_FORMULAS)
    patience: int = option(3, "epochs without improvement before a global-decay restart (0 turns global decay off)",
                           type=int, valid="[0, inf)")
    global_decay: float = option(0.2, "formula (2) factor", type=float, valid="(0, 1]")
    max_restarts: int = option(4, "restarts before training stops", type=int, valid="[0, inf)")
    global_decay_schedule: str = option("paper", "'paper': rate x decay^(n+1) at the (n+1)-th restart, compounding; "
                                        "'sample_cnn': lr0 x decay^k at the k-th restart",
                                        choices=GLOBAL_DECAY_SCHEDULES)
    monitor: str = option("val/loss", "metric for restarts and the best checkpoint")
    monitor_mode: str = option("min", "min for losses, max for AUCs", choices=("min", "max"))
    nonfinite_loss: str = option("stop", "on a NaN/inf training loss: stop with a message or skip the batch",
                                 choices=NONFINITE_ACTIONS)


@dataclass(frozen=True)
class RecipeOptions:
    """training recipe: --recipe sets these and the optimisation options it names; options given explicitly win."""

    recipe: str | None = option(None, "named defaults for optimiser, schedule, crops and augmentation "
                                "(docs/recipes.md); options given explicitly override it; default: the model's "
                                "(paper for the paper's models, won2020 for Won et al.'s)", choices=tuple(RECIPES),
                                identity=False, tunable=False,
                                essential="paper, won2020 or modern: optimiser, schedule and augmentation defaults")
    schedule: str = option("paper", "learning-rate schedule: 'paper' (local + global decay, --local-decay, "
                           "--patience...), 'won2020' (Adam, then SGD stages at fixed epochs, each reloading the best "
                           "weights: --stage-epochs, --stage-lrs), 'cosine' (linear warm-up, then cosine decay to 0 "
                           "at --max-epochs: --warmup)", choices=SCHEDULES)
    warmup: float = option(0.0, "cosine schedule: fraction of all training steps with a linear warm-up", type=float,
                           valid="[0, 1)")
    stage_epochs: tuple = option((80, 20, 20), "won2020 schedule: epochs of each stage before its switch (the first "
                                "optimiser's, then each SGD rate's; the last rate runs to --max-epochs)",
                                type=int_list, metavar="E,E,...", tunable=False, valid="[1, inf)")
    stage_lrs: tuple = option((1e-3, 1e-4, 1e-5), "won2020 schedule: SGD (Nesterov) rate after each switch",
                             type=float_list, metavar="LR,LR,...", tunable=False, valid="(0, inf)")
    mixup_alpha: float = option(0.0, "mixup: Beta(alpha, alpha) mixing of training examples and targets (0: off)",
                                type=float, valid="[0, inf)", known_as=("mixup",))
    freq_mask: float = option(0.0, "SpecAugment (Mel models): widest frequency mask as a fraction of the Mel bands "
                              "(0: off)", type=float, valid="[0, 1)")
    time_mask: float = option(0.0, "SpecAugment (Mel models): widest time mask as a fraction of the frames (0: off)",
                              type=float, valid="[0, 1)")
    n_masks: int = option(2, "SpecAugment: masks of each kind per example", type=int, valid="[1, inf)")
    ema_decay: float = option(0.0, "evaluate, checkpoint and test an exponential moving average of the weights with "
                              "this decay per step, warmed up as min(decay, (1+n)/(10+n)) (0: off)", type=float, valid="[0, 1)")
    gradient_clip: float = option(0.0, "clip the gradients' global norm to this (0: off)", type=float,
                                  valid="[0, inf)")

    def __post_init__(self) -> None:
        # Tuples whether parsed, read from a YAML file or from config.json (lists there): one value, one digest.
        object.__setattr__(self, "stage_epochs", tuple(int(v) for v in self.stage_epochs))
        object.__setattr__(self, "stage_lrs", tuple(float(v) for v in self.stage_lrs))


@dataclass(frozen=True)
class DistillationOptions:
    """distillation and self-training: teachers' probabilities as targets, unlabelled audio (docs/distillation.md)."""

    teacher: tuple | None = option(None, "distil these trained runs (run folders or .ckpt files; several: their "
                                   "ensemble, averaged as --evaluate averages it) into this model: the loss mixes "
                                   "binary cross-entropy on the true tags with binary cross-entropy on the teachers' "
                                   "probabilities for the crop the student reads (teachers are identified by the "
                                   "content of their weights)", metavar="CKPT|RUN_DIR", action="nargs+",
                                   tunable=False, essential="distil these trained runs (several: their ensemble)")
    distill_weight: float = option(0.9, "--teacher: weight w of the teachers' term; the true tags get 1 - w (0.9: "
                                   "Schmid et al. 2023's 0.1 on the labels)", type=float, valid="[0, 1]")
    distill_temperature: float = option(1.0, "--teacher: teachers' probabilities are sigmoid(logit / T) (1: as "
                                        "they predict)", type=float, valid="(0, inf)", metavar="T")
    unlabeled: str | None = option(None, "self-training: a folder of audio of any format and length (walked "
                                   "recursively), decoded once into the cache, whose random crops join each epoch "
                                   "with the --teacher probabilities as their only targets (broken files are listed "
                                   "in errors.csv beside its store)", metavar="DIR", tunable=False,
                                   essential="self-training on a folder of unlabelled audio (with --teacher)")
    unlabeled_ratio: float = option(1.0, "--unlabeled: crops of unlabelled audio per labelled training item in an "
                                    "epoch (1: Won et al. 2021's half-and-half batches)", type=float, valid="(0, inf)")
    rounds: int = option(1, "--teacher: rounds of self-training or distillation, each a run folder: the student of "
                         "round k teaches round k+1 (rerunning the command reuses finished rounds and resumes a "
                         "killed one)", type=int, valid="[1, inf)", identity=False, tunable=False)

    def __post_init__(self) -> None:
        if self.teacher is not None:  # a tuple whether parsed, read from YAML or from config.json
            object.__setattr__(self, "teacher", tuple(str(t) for t in self.teacher))


@dataclass(frozen=True)
class TrainerOptions:
    """run: seed, run folder, hardware, precision and the Trainer's limits."""

    seed: int = option(0, "seed for weights, epoch order, random crops and dropout", type=int, tunable=False,
                       valid="[0, 4294967295]", essential="seed of weights, order, crops and dropout",
                       known_as=("random_seed", "rng_seed"))
    deterministic: bool = option(False, "deterministic GPU kernels (reruns and resumes on the CPU are bit-exact "
                                 "without it)", action="store_true", tunable=False)
    run_dir: str | None = option(None, "run folder (default: RUNS_ROOT/<model>-seed<seed>-<config hash>; rerunning "
                                 "the same command resumes it)", metavar="DIR", identity=False, tunable=False,
                                 essential="run folder (default: RUNS_ROOT/<model>-seed<seed>-<hash>; rerunning resumes)",
                                 known_as=("output_dir", "out_dir", "save_dir", "output"))
    runs_root: str = option("runs", "parent of default run folders", metavar="DIR", identity=False, tunable=False)
    accelerator: str = option("auto", "cpu, gpu, auto", metavar="cpu|gpu|auto", identity=False, tunable=False,
                              essential="cpu, gpu or auto")
    devices: str | int | list = option("auto", "devices (processes) per node: a count, a list of GPU indices (0,1), "
                                       "or auto (all GPUs, or 1 on CPU)", metavar="N|0,1|auto", type=str,
                                       identity=False, tunable=False,
                                       essential="devices per node: a count, GPU indices (0,1) or auto",
                                       known_as=("gpus", "n_gpus", "num_gpus"))
    num_nodes: int = option(1, "nodes; under SLURM, as many as the job has", type=int, identity=False,
                            tunable=False, valid="[1, inf)")
    strategy: str = option("auto", "auto: DDP when devices x nodes > 1, else one device; ddp: always DDP (one "
                           "process per device; run.py is started again for each extra process on this node)",
                           choices=STRATEGIES, identity=False, tunable=False)
    ddp_timeout: int | None = option(None, "under DDP, a rank waiting this long for another (a dead or frozen node) "
                                     "stops with an error instead of hanging; must exceed rank 0's longest solo work "
                                     "(default 1800)", type=int, metavar="SECONDS", identity=False,
                                     tunable=False, valid="[1, inf)")
    precision: str = option("32", "training precision; the Mel frontend always runs in fp32; 16-mixed needs a GPU",
                            choices=PRECISIONS, tunable=False)
    sync_batchnorm: bool = option(False, "batch-norm statistics over the whole batch of all GPUs under DDP (GPU only; "
                                  "no effect on one device)", action="store_true", tunable=False)
    cudnn_benchmark: bool = option(True, "let cuDNN time its algorithms for each new input shape and keep the "
                                   "fastest (GPU; off under --deterministic)", action="boolean", identity=False,
                                   tunable=False)
    compile: bool = option(False, "torch.compile the network (the first steps of each stage compile it; "
                           "checkpoints stay loadable without compiling)", action="store_true", tunable=False)
    compile_backend: str | None = option(None, "torch.compile backend for --compile (default inductor, which "
                                         "generates kernels; aot_eager and eager only trace the network: a quick "
                                         "check, or a host without a C++ compiler)", choices=COMPILE_BACKENDS,
                                         tunable=False)
    limit_train_batches: float | int | None = option(None, "train on this many batches (int) or this fraction per "
                                                     "epoch (quick tries)", type=fraction_or_count, tunable=False,
                                                     valid="[0, inf)")
    limit_val_batches: float | int | None = option(None, "same for validation", type=fraction_or_count,
                                                   tunable=False, valid="[0, inf)")
    limit_test_batches: float | int | None = option(None, "same for test", type=fraction_or_count, tunable=False,
                                                    valid="[0, inf)")


@dataclass(frozen=True)
class LoggingOptions:
    """logging: where metrics go and how often."""

    logger: str = option("wandb", "metrics logger (wandb: online when logged in to W&B, else offline into "
                         "RUN_DIR/wandb with the `wandb sync` command printed at the end; csv and tensorboard write "
                         "RUN_DIR/logs)", metavar="wandb|csv|tensorboard|none", choices=LOGGERS, identity=False, tunable=False,
                         essential="wandb, csv, tensorboard or none", known_as=("log", "logging"))
    wandb_project: str | None = option(None, "W&B project (default: $WANDB_PROJECT, else mtat-tagging)",
                                       identity=False, tunable=False)
    wandb_group: str | None = option(None, "W&B run group (a sweep's trials are grouped by study name)",
                                     identity=False, tunable=False)
    progress: bool = option(True, "no progress bars", flag="--no-progress", action="store_false", identity=False,
                            tunable=False, essential="no progress bars")
    figures: bool = option(True, "write no figures at the end of a training run (RUN_DIR/figures and their W&B "
                           "images): plotting costs seconds that many small runs, a sweep's trials, can skip",
                           flag="--no-figures", action="store_false", identity=False, tunable=False)
    log_every_n_steps: int | None = option(None, f"send the training loss and learning rate to the logger and "
                                           f"progress bar every N steps ({DEFAULT_LOG_EVERY_N_STEPS}); each such step "
                                           "waits for the GPU, so 1 costs speed on fast models", type=int,
                                           metavar="N", identity=False, tunable=False, valid="[1, inf)")


RUN_GROUPS = (ModelOptions, DataOptions, MelOptions, OptimOptions, RecipeOptions, DistillationOptions, TrainerOptions,
              LoggingOptions)

@dataclass(frozen=True)
class RunOptions(LoggingOptions, TrainerOptions, DistillationOptions, RecipeOptions, OptimOptions, MelOptions, DataOptions,
                 ModelOptions):
    """All options of one training run or evaluation (attribute per option; see the groups)."""

    def __post_init__(self) -> None:
        RecipeOptions.__post_init__(self)
        DistillationOptions.__post_init__(self)
        check_values(self)

    def replace(self, **changes) -> RunOptions:
        unknown = sorted(set(changes) - RUN_OPTION_NAMES)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The options as config.json stores them and digests are taken of them (`experiments.legacy`)."""
        values = compatible_dict(dataclasses.asdict(self), {f.name: f.default for f in fields(self)})
        # as JSON holds them, so that a saved config.json compares equal to the options it came from
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def to_yaml_dict(self) -> dict:
        """The options as `config.yaml` and `--print-config` write them: every run option, nothing else."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> RunOptions:
        """Options from a saved config (config.json's top level): unknown keys are an error, legacy ones ignored."""
        known = {k: v for k, v in values.items() if k in RUN_OPTION_NAMES}
        unknown = sorted(set(values) - RUN_OPTION_NAMES - ignored_saved_keys())
        if unknown:
            raise ConfigError(f"unknown option(s) in a saved configuration: {', '.join(unknown)}")
        return cls(**known).normalised()

    def normalised(self) -> RunOptions:
        """Paths made absolute and devices parsed, as every run stores them."""
        changes = {
            "cache_dir": str(Path(self.cache_dir).expanduser().resolve() if self.cache_dir else default_cache_root()),
            "runs_root": str(Path(self.runs_root).expanduser().resolve()),
            "devices": parse_devices(self.devices),
        }
        if self.data != "synthetic":
            changes["data"] = str(Path(self.data).expanduser().resolve())
        if self.run_dir:
            changes["run_dir"] = str(Path(self.run_dir).expanduser().resolve())
        if self.teacher:
            changes["teacher"] = tuple(str(Path(t).expanduser().resolve()) for t in self.teacher)
        if self.unlabeled:
            changes["unlabeled"] = str(Path(self.unlabeled).expanduser().resolve())
        return dataclasses.replace(self, **changes)


RUN_OPTION_NAMES = frozenset(f.name for f in fields(RunOptions))
NON_IDENTITY_OPTIONS = frozenset(f.name for f in fields(RunOptions) if not f.metadata["identity"]) | {"resume",
                                                                                                       "summary"}
"""Options that change neither what is trained nor how: two runs differing only in these share a run folder."""
NOT_TUNABLE = frozenset(f.name for f in fields(RunOptions) if not f.metadata["tunable"]) | set(LEGACY_KEYS)
"""Options that describe the data, the machine or the run's bookkeeping, not the model: a sweep cannot tune them."""


# ---- mode options: what run.py does -----------------------------------------------------------------
@dataclass(frozen=True)
class ModeOptions:
    """what to do (besides training --model): one of these at a time."""

    download: str | None = option(None, "fetch MagnaTagATune into DIR (the three mp3.zip parts and both CSVs from the "
                                  "dataset's home), resuming partial downloads, verifying SHA-256, joining and "
                                  "unpacking; then use --data DIR", metavar="DIR",
                                  essential="fetch MagnaTagATune into DIR, then use --data DIR")
    download_url: str | None = option(None, "folder URL to download from instead of the dataset's home (a mirror; "
                                      "http(s):// or file://)", metavar="URL")
    summary: bool = option(False, "print the network's layers, output shapes and parameter counts (PyTorch and the "
                           "paper's Keras convention) and exit", action="store_true",
                           essential="print the network's layers and parameter counts, and exit")
    resume: str | None = option(None, "continue the run in RUN_DIR from its last checkpoint, with the options saved "
                                "there", metavar="RUN_DIR",
                                essential="continue the run in RUN_DIR from its last checkpoint")
    evaluate: list | None = option(None, "test a checkpoint (a .ckpt file, or a run folder: its best checkpoint) "
                                   "without training, on the data of its run (options given here override them); "
                                   "writes metrics.json, per_tag.csv, results.md and test_predictions.npz into "
                                   "--run-dir (default: RUN_DIR/evaluations/<checkpoint name>); several: their "
                                   "ensemble (clip probabilities averaged, thresholds chosen on validation; default "
                                   "RUNS_ROOT/ensembles/...)", metavar="CKPT|RUN_DIR", action="nargs+",
                                   essential="test a checkpoint or run folder (several: their ensemble)")
    tag: list | None = option(None, "tag audio files (MP3, WAV, FLAC, OGG, ...; any rate, mono or stereo, any length) "
                              "and folders (walked recursively) with --checkpoint", metavar="PATH", action="nargs+",
                              essential="tag audio files and folders with --checkpoint")
    similar: str | None = option(None, "list the tracks of --embeddings nearest to this audio file by cosine "
                                 "similarity of their clip embeddings (with --checkpoint, the model that made them; "
                                 "--top-k of them)", metavar="QUERY_FILE",
                                 essential="list the tracks of --embeddings most similar to this file")
    export: str | None = option(None, "write the model of a run folder or checkpoint as a self-contained folder "
                                "(--out DIR): safetensors weights, its configuration, tags and thresholds, a model "
                                "card; --format onnx adds one ONNX graph of the Mel frontend and the network",
                                metavar="CKPT|RUN_DIR", essential="export a trained model to a portable folder (--out)")
    out: str | None = option(None, "where the command writes: with --tag, the catalogue (a .csv, .jsonl or .parquet "
                             "file: many files tagged in parallel, resumably); with --export, the model's folder; with "
                             "--compare / --reproduce, the comparison's folder (default: RUNS_ROOT/comparison, "
                             "RUNS_ROOT/reproduce/NAME)", metavar="FILE|DIR",
                             essential="--tag: the catalogue file; --export: the folder; --compare: the folder")
    print_config: bool = option(False, "print the complete configuration of this command as YAML (it runs as it is "
                                "with --config FILE) and exit", action="store_true",
                                essential="print this command's complete configuration as YAML, and exit")

    def __post_init__(self) -> None:
        check_values(self)



@dataclass(frozen=True)
class TaggingOptions:
    """tagging your own music (--tag)."""

    checkpoint: str | None = option(None, "model to tag with: a .ckpt file, a run folder (its best checkpoint), or a "
                                    "folder of --export",
                                    metavar="CKPT|RUN_DIR",
                                    essential="the model --tag uses: a .ckpt file or a run folder",
                                    known_as=("ckpt", "ckpt_path", "weights"))
    top_k: int = option(5, "also list the K highest-scoring tags (--similar: the K nearest tracks)", type=int,
                        valid="[1, inf)")
    json: bool = option(False, "print one JSON document instead of text", action="store_true")
    taggram: str | None = option(None, "plot tag probability over time: a .png for one file, else a folder with one "
                                 "PNG per file", metavar="PNG|DIR")
    taggram_hop: float | None = option(None, "seconds between the taggram's windows (the model's input slid over "
                                       "the file; default 3)", type=float, metavar="SECONDS", valid="(0, inf)")
    start: float | None = option(None, "tag from this time in each file (default: its start)", type=float,
                                 metavar="SECONDS", valid="[0, inf)")
    duration: float | None = option(None, "tag this many seconds (default: to the end of the file)", type=float,
                                    metavar="SECONDS", valid="(0, inf)")
    embeddings: str | None = option(None, "--tag --out: also write each file's clip embedding (the network's "
                                    "penultimate features averaged over its segments), rows as in --out: a .npy "
                                    "(numpy.load) or .parquet (pandas) file; --similar: the embeddings to search",
                                    metavar="PATH")
    format: str = option("safetensors", "--export: safetensors weights only, or also model.onnx (the Mel frontend "
                         "and the network as one ONNX graph; needs the onnx extra)", choices=("safetensors", "onnx"))

    def __post_init__(self) -> None:
        check_values(self)



STORAGE_PASSWORD_VARIABLE = "PGPASSWORD"
"""Where a sweep's database password belongs: PostgreSQL's own variable, which libpq (psycopg, the `postgres`
extra) reads when the --storage URL carries no password."""
MASKED_PASSWORD = "***"
"""What every file and message shows in place of a --storage password."""


def masked_storage(url: str | None) -> str | None:
    """`url` with its password replaced by ``***``: how --print-config, logs, reports and errors show --storage.

    The URL itself, password included, is kept in memory to connect with (`sweeps.storage`); a
    ``***`` password read back (from a --print-config file) means the one in ``PGPASSWORD``.
    """
    if not url or "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        return parsed.render_as_string(hide_password=True) if parsed.password is not None else url
    except Exception:  # not an SQLAlchemy URL: hide whatever sits between "user:" and "@"
        import re

        return re.sub(r"(://[^/@:]*:)[^@]*@", rf"\g<1>{MASKED_PASSWORD}@", url)


@dataclass(frozen=True)
class SweepOptions:
    """sweeps (Optuna): run options given on the command line or in --config files are fixed for all trials."""

    sweep: str | None = option(None, "tune MODEL's search space (sweeps/spaces.py; lstm_mel: FFT, hop, Mel bands, "
                               "segments per clip, lr, global decay): runs trials until the study has --trials, then "
                               "writes the report into RUNS_ROOT/sweeps/STUDY; start it many times (or on many "
                               "machines) to add workers", type=registered_model, metavar="MODEL",
                               essential="tune MODEL's search space with Optuna (start it again to add workers)")
    trials: int = option(20, "trials in the whole study, all workers together (complete + pruned)", type=int,
                         valid="[1, inf)", essential="trials in the whole study", known_as=("n_trials", "num_trials"))
    timeout: float | None = option(None, "this worker starts no new trial after S seconds", type=float, metavar="S",
                                   valid="(0, inf)")
    study_name: str | None = option(None, "study name (default: MODEL-<hash of the fixed options and the space>)")
    storage: str | None = option(None, "sqlite:///PATH, postgresql://USER:PW@HOST/DB, or journal:PATH on a shared "
                                 "file system (default: sqlite in RUNS_ROOT/sweeps/STUDY/study.db)", metavar="URL",
                                 essential="study storage: sqlite:///PATH, postgresql://..., journal:PATH")
    sweep_report: bool = option(False, "write the report of an existing study (--study-name, or the same --sweep "
                                "command) and exit", action="store_true")
    pruner: str = option("median", "stop trials whose validation ROC-AUC is below the median of earlier trials at "
                         "the same epoch (median) or never (none)", choices=("median", "none"))
    pruner_startup_trials: int = option(5, "finished trials before the pruner prunes anything", type=int,
                                        valid="[0, inf)")
    pruner_warmup_epochs: int = option(0, "epochs of every trial never pruned", type=int, valid="[0, inf)")
    sweep_space: str | None = option(None, 'change the search space: {"hop_length": [256, 512], "lr": {"low": 0.001, '
                                     '"high": 0.1, "log": true}, "global_decay": null} (a list: choices; an object: a '
                                     'range; null: remove)', metavar="JSON|FILE")
    sweep_seed: int = option(0, "seed of the sampler; each trial's draws follow from it and the trial's number, so a "
                             "one-worker sweep reruns identically and concurrent workers never draw alike", type=int,
                             valid="[0, 4294967295]")
    heartbeat_interval: int = option(60, "seconds between a running trial's heartbeats", type=int, valid="[1, inf)")
    grace_period: int = option(300, "a trial without a heartbeat for this long is failed and retried (a worker that "
                               "died on this machine is noticed at once)", type=int, valid="[1, inf)")
    max_retry: int = option(3, "retries of a trial whose worker died", type=int, valid="[0, inf)")
    max_failures: int = option(3, "this worker stops after this many failed trials in a row", type=int,
                               valid="[1, inf)")

    def __post_init__(self) -> None:
        check_values(self)
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}")
        if self.heartbeat_interval < 1 or self.grace_period <= self.heartbeat_interval:
            raise ConfigError(f"--grace-period ({self.grace_period} s) must exceed --heartbeat-interval "
                              f"({self.heartbeat_interval} s, at least 1)")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout must be positive, got {self.timeout}")


@dataclass(frozen=True)
class ComparisonOptions:
    """comparing models (--compare, --reproduce)."""

    compare: list | None = option(None, "compare finished runs (and --evaluate folders) on their saved test "
                                  "predictions: comparison.md/.csv, per-tag differences, bootstrap intervals, paired "
                                  "differences against --reference; runs differing only in seed form one row",
                                  metavar="RUN_DIR", action="nargs+",
                                  essential="compare finished runs on their test predictions")
    reference: str | None = option(None, "the run (its seed group) the others are compared with (default: the first)",
                                   metavar="RUN_DIR")
    bootstrap: int = option(DEFAULT_RESAMPLES, "bootstrap resamples of the test clips", type=int,
                            metavar="N", valid="[1, inf)")
    bootstrap_seed: int = option(DEFAULT_SEED, "seed of the resampling; the same for every run compared", type=int,
                                 metavar="S", valid="[0, 4294967295]")
    reproduce: str | None = option(None, "train every run a published table needs (table4, won2020, "
                                   "won2020-jamendo, distillation; finished runs are reused, killed ones resume), then "
                                   "write its comparison with the published numbers", metavar="NAME",
                                   essential="train every run a published table needs, then compare (table4, won2020, ...)")
    seeds: str = option("0", "--reproduce: seeds per model", metavar="0,1,2")
    dry_run: bool = option(False, "--reproduce: list the runs and their commands only", action="store_true")
    task_index: int | None = option(None, "--reproduce: run only the I-th run of the list (a SLURM array task)",
                                    type=int, metavar="I", valid="[0, inf)")

    def __post_init__(self) -> None:
        check_values(self)



ALL_GROUPS = (ModeOptions, *RUN_GROUPS, TaggingOptions, SweepOptions, ComparisonOptions)


def declared_fields(group) -> list[dataclasses.Field]:
    """The fields a group declares itself (RunOptions' groups share no names)."""
    return [f for f in fields(group) if f.name in group.__annotations__]


FIELDS_BY_NAME = {f.name: f for group in ALL_GROUPS for f in declared_fields(group)}
"""Every option's declaration by name."""


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def default_text(f: dataclasses.Field) -> str:
    if f.metadata["action"] in ("store_true", "store_false", "boolean"):
        return "on" if f.default else "off"
    if isinstance(f.default, tuple):
        return ",".join(map(str, f.default))
    return "the model's" if f.default is None and f.name in MelOptions.__annotations__ else str(f.default)


def _group_heading(group) -> tuple[str, str]:
    """(heading, description) of a group, from its docstring's 'heading: description.'."""
    title, _, description = (group.__doc__ or group.__name__).partition(":")
    title, description = title.strip().rstrip("."), description.strip()
    return title[:1].upper() + title[1:], description[:1].upper() + description[1:]


def _table_default(f: dataclasses.Field) -> str:
    """The default as the option table shows it: whether a flag is given, else the value (code) or a phrase."""
    if f.metadata["action"] == "store_false":  # --no-progress sets progress=False: the flag is off by default
        return "off" if f.default else "on"
    text = default_text(f)
    if f.default is None:
        return "the model's" if text == "the model's" else "—"
    return text if text in ("on", "off") else f"`{text}`"


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def option_table() -> str:
    """The option reference (Markdown), generated from the declarations: one table per group of options.

    The identity and tunable columns appear for run options only; the mode, tagging, sweep and
    comparison options are never part of a run's identity or a sweep's space.
    """
    sections = []
    for group in ALL_GROUPS:
        heading, description = _group_heading(group)
        group_fields = declared_fields(group)
        run_group = all(f.name in RUN_OPTION_NAMES for f in group_fields)
        lines = [f"## {heading}", ""]
        if description:
            lines += [description, ""]
        if run_group:
            lines += ["| option | default | identity | tunable | what it does |", "|---|---|---|---|---|"]
        else:
            lines += ["| option | default | what it does |", "|---|---|---|"]
        for f in group_fields:
            text = _markdown_cell(f.metadata["help"])
            if f.metadata["choices"]:
                text += "; choices: " + ", ".join(f"`{c}`" for c in f.metadata["choices"])
            cells = [f"`{flag_of(f)}`", _table_default(f)]
            if run_group:
                cells += ["yes" if f.metadata["identity"] else "no", "yes" if f.metadata["tunable"] else "no"]
            lines.append("| " + " | ".join([*cells, text]) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


OPTION_PAGE = "docs/reference/options.md"
"""The page holding the generated option reference, relative to the repository root."""
TABLE_START = "<!-- options table: generated by experiments.options.option_table() -->"
TABLE_END = "<!-- end options table -->"


def update_option_page(path: str | Path = OPTION_PAGE) -> bool:
    """Rewrite the option reference between the page's markers; True when it changed."""
    path = Path(path)
    text = path.read_text()
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    new = f"{head}{TABLE_START}\n{option_table()}\n{TABLE_END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":  # python -m experiments.options [PAGE], from the repository root: refresh the page
    import sys

    print("updated" if update_option_page(sys.argv[1] if len(sys.argv) > 1 else OPTION_PAGE) else "up to date")
