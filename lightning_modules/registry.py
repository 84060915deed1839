"""The models `run.py --model` knows: the only list of models, one `ModelSpec` entry each.

An entry names its network by import path ("package.module:Class", imported when a network is
built, so this module imports no torch and `run.py --help` stays fast) and holds everything else
the suite needs to know about the model: its input frontend and segment layout, its batch size and
recipe, the network's defaults, its sweep space, and the CPU-sized variant the tests train. From
the entries follow the command line's `--model` and `--sweep` values, each model's LightningModule
class (`lightning_modules/architectures.py`), the sweep spaces (`sweeps/spaces.py`: a default
space for an entry that declares none), the tests' small variants and the benchmarks' model lists.
Adding a model is one network file (a `TaggingNetwork`, `lightning_modules/networks/base.py`) and
one `register(ModelSpec(...))` call (docs/adding-a-model.md).

A network is described by a JSON-able config `{"name": ..., "class": ..., "kwargs": {...}}`; the
config is saved with every checkpoint, so `build_network(config)` rebuilds the same architecture
without the data (for `--tag`, evaluation, and loading checkpoints).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import math
import re
from dataclasses import dataclass

from datamodules.mel_config import MelConfig
from datamodules.segments import TRAIN_CROPS, SegmentLayout
from infrastructure.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class SmallVariant:
    """What makes a model small enough for seconds-long CPU runs on 3.7 s clips (the tests' runs).

    `args`: run.py options added to the command line (Mel settings, `--width`, segments per clip).
    `spec`: `ModelSpec` fields replaced in the registry entry, as (field, value) pairs, for what no
    option sets (a chunk length, a network default); `ModelSpec.small_variant()` applies them.
    """

    args: tuple[str, ...] = ()
    spec: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What `--model NAME` trains, and its defaults (the paper's where it gives them).

    `network`: the network class as "package.module:Class" (a `TaggingNetwork`; imported lazily).
    `frontend`: the model's default Mel settings, or None for a waveform model.
    `frame_samples`: fixed segment length for models that read chunks of a clip, waveform or Mel
    (None: the whole clip, or for Mel models the clip's frames split into `segments_per_clip`).
    `segments_per_clip`: segments per clip in evaluation (and in training with fixed crops);
    None for frame models means as many frames as cover the clip.
    `batch_size`: the paper does not give batch sizes; these are the SampleCNN paper's 23 for
    frames and what fits a 16 GB GPU comfortably for the rest.
    `network_defaults`: keyword arguments of the network besides its input size and tag count.
    `width_kwarg`: the network argument `--width` sets (None: the model has no base width).
    `input_norm_option`: whether `--input-norm` applies (the network takes `input_norm`).
    `recipe`: the `--recipe` used when none is given (experiments/recipes.py).
    `module`: the name of its LightningModule class (default: the model's name in CamelCase +
    "Module"); `description`: that class's docstring.
    `space`: its sweep space, as `--sweep-space` data: (option, choices list or range dict) pairs
    in the order they are suggested (None: sweeps/spaces.py's default space for its kind).
    `baselines`: points enqueued as a new study's first trials, as option -> value dicts (None:
    the entry's own defaults, when it declares no space; () for none).
    `small`: its CPU-sized variant (`SmallVariant`).
    """

    name: str
    table: str
    network: str
    frontend: MelConfig | None
    segments_per_clip: int | None
    frame_samples: int | None = None
    train_crop: str
    batch_size: int
    network_defaults: tuple[tuple[str, object], ...] = ()
    width_kwarg: str | None = None
    input_norm_option: bool = False
    recipe: str = "paper"
    module: str = ""
    description: str = ""
    space: tuple[tuple[str, object], ...] | None = None
    baselines: tuple[dict, ...] | None = None
    small: SmallVariant = SmallVariant()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ConfigError(f"model name {self.name!r}: use lower-case letters, digits and underscores")
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.network):
            raise ConfigError(f"model {self.name}: network {self.network!r} is not an import path "
                              "'package.module:Class'")
        if self.train_crop not in TRAIN_CROPS:
            raise ConfigError(f"model {self.name}: train_crop {self.train_crop!r}; choose one of "
                              f"{', '.join(TRAIN_CROPS)}")
        for field in ("batch_size", "segments_per_clip", "frame_samples"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"model {self.name}: {field} must be a positive integer, got {value!r}")
        if self.module and not self.module.isidentifier():
            raise ConfigError(f"model {self.name}: module {self.module!r} is not a class name")

    @property
    def network_class_name(self) -> str:
        return self.network.rpartition(":")[2]

    @property
    def module_name(self) -> str:
        """The name of the model's LightningModule class in lightning_modules/architectures.py."""
        return self.module or "".join(part.capitalize() for part in self.name.split("_")) + "Module"

    def network_class(self) -> type:
        """The network class (imports its module)."""
        module_path, _, class_name = self.network.partition(":")
        try:
            return getattr(importlib.import_module(module_path), class_name)
        except (ImportError, AttributeError) as error:
            raise ConfigError(f"model {self.name}: cannot import its network {self.network} "
                              f"({type(error).__name__}: {error})") from error

    def small_variant(self) -> ModelSpec:
        """This entry with its CPU-sized variant's field changes (`small.spec`) applied."""
        return dataclasses.replace(self, **dict(self.small.spec)) if self.small.spec else self


MODELS: dict[str, ModelSpec] = {}
"""Every registered model by name, in registration order (`register` adds to it)."""


def register(spec: ModelSpec) -> ModelSpec:
    """Add `spec` to `MODELS` (ConfigError for a name, or a module class name, already taken)."""
    if spec.name in MODELS:
        raise ConfigError(f"model {spec.name!r} is registered already ({MODELS[spec.name].table})")
    for other in MODELS.values():
        if other.module_name == spec.module_name:
            raise ConfigError(f"model {spec.name}: module class name {spec.module_name} is taken by {other.name}")
        if other.network_class_name == spec.network_class_name and other.network != spec.network:
            raise ConfigError(f"model {spec.name}: network class {spec.network_class_name} is {other.network} "
                              f"already ({other.name}); checkpoints name networks by class: rename it")
    MODELS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove model `name` from `MODELS` (what `register` added, e.g. a test's model)."""
    model_spec(name)
    del MODELS[name]


def model_spec(name: str) -> ModelSpec:
    """The registry entry of model `name`: the one look-up (ConfigError naming the closest known model)."""
    spec = MODELS.get(name) if isinstance(name, str) else None
    if spec is None:
        close = difflib.get_close_matches(str(name), list(MODELS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (known: {', '.join(MODELS)})")
    return spec


def segment_layout(spec: ModelSpec, clip_samples: int, frontend: MelConfig | None,
                   segments_per_clip: int | None = None, train_crop: str | None = None,
                   random_crops: int | None = None) -> SegmentLayout:
    """The segments `spec` reads from clips of `clip_samples`, with the user's overrides."""
    crop = train_crop or spec.train_crop
    if frontend is not None and spec.frame_samples is None:
        n = segments_per_clip or spec.segments_per_clip
        return SegmentLayout.for_mel_frames(clip_samples, frontend.hop_length, n, crop, random_crops)
    if spec.frame_samples is not None:  # fixed-length chunks (waveform frames or short Mel chunks)
        n = segments_per_clip or spec.segments_per_clip or max(1, math.ceil(clip_samples / spec.frame_samples))
        layout = SegmentLayout(spec.frame_samples, n, crop, random_crops)
    else:
        n = segments_per_clip or spec.segments_per_clip
        layout = SegmentLayout(clip_samples // n, n, crop, random_crops)
    layout.check_fits(clip_samples)
    return layout


def input_shape(frontend: MelConfig | None, layout: SegmentLayout) -> tuple[int, ...]:
    """Shape of one network input (no batch dimension): (samples,) or (n_mels, frames)."""
    if frontend is None:
        return (layout.segment_samples,)
    return (frontend.n_mels, frontend.n_frames(layout.segment_samples))


def network_config(spec: ModelSpec, shape: tuple[int, ...], n_tags: int, *, dropout: float | None = None,
                   width: int | None = None, input_norm: bool = False) -> dict:
    """The JSON-able description of the network for these inputs (`build_network` takes it), with the user's
    `dropout`, base `width` and `input_norm` where given (None / False: the entry's defaults)."""
    kwargs = dict(spec.network_defaults)
    if spec.frontend is None:
        kwargs.update(n_samples=shape[0], n_tags=n_tags)
    else:
        kwargs.update(n_mels=shape[0], n_frames=shape[1], n_tags=n_tags)
    if dropout is not None:
        kwargs["dropout"] = dropout
    if input_norm:
        if not spec.input_norm_option:
            takers = [s.name for s in MODELS.values() if s.input_norm_option]
            raise ConfigError(f"--input-norm applies to {', '.join(takers)} only ({spec.name} normalises with batch "
                              "norm already)")
        kwargs["input_norm"] = True
    if width is not None:
        if spec.width_kwarg is None:
            raise ConfigError(f"--width applies to models with a base channel width; {spec.name} has none")
        kwargs[spec.width_kwarg] = width
    return {"name": spec.name, "class": spec.network_class_name, "kwargs": kwargs}


def network_class(config: dict) -> type:
    """The class of the network a config describes: its model's entry's, else that of an entry with the config's class
    name (`register` lets one class name stand for one import path only)."""
    class_name = config.get("class")
    spec = MODELS.get(config.get("name"))
    if spec is None or spec.network_class_name != class_name:
        spec = next((s for s in MODELS.values() if s.network_class_name == class_name), None)
    if spec is None:
        raise ConfigError(f"unknown network {class_name!r} in config {config}")
    return spec.network_class()


def build_network(config: dict):
    """Instantiate the network a config describes (ConfigError for unknown or impossible ones)."""
    cls = network_class(config)
    kwargs = config["kwargs"]
    parameters = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(kwargs) - set(parameters))
        if unknown:
            raise ConfigError(f"{config.get('name')}: network {cls.__name__} takes no argument "
                              f"{', '.join(unknown)}")
    return cls(**kwargs)


# ---- the models ----------------------------------------------------------------------------------------------------
_NETWORKS = "lightning_modules.networks"
_LR = ("lr", {"low": 1e-3, "high": 1e-1, "log": True})
_GLOBAL_DECAY = ("global_decay", [0.1, 0.2, 0.5])
_PAPER_POINT = {"lr": 0.01, "global_decay": 0.2}  # the paper's SGD rate and decay, with each model's settings
_TINY_MEL = ("--hop-length", "512")  # 3.7 s clips: the paper's hop 1792 gives mel_cnn only 33 frames there
_WIDTH_8 = ("--width", "8")

# The paper's four models (Tables 1-3; Lee et al. 2017's frame model).
register(ModelSpec(
    name="sample_cnn", table="Table 1", network=f"{_NETWORKS}.sample_cnn:SampleCNN", frontend=None,
    segments_per_clip=1, train_crop="fixed", batch_size=16,
    network_defaults=(("block_channels", [128, 256, 256, 256, 256, 256, 256, 512]), ("dropout", 0.5),
                      ("frame_head", False)),
    module="SampleCNNModule", description="SampleCNN on whole 29.1 s waveforms (the paper's Table 1).",
    baselines=({**_PAPER_POINT, "dropout": 0.5},)))
register(ModelSpec(
    name="sample_cnn_frames", table="Lee et al. 2017 (3^9 model)", network=f"{_NETWORKS}.sample_cnn:SampleCNN",
    frontend=None, segments_per_clip=None, frame_samples=59_049, train_crop="random", batch_size=23,
    network_defaults=(("block_channels", [128, 128, 256, 256, 256, 256, 256, 256, 512]), ("dropout", 0.5),
                      ("frame_head", True)),
    module="SampleCNNFramesModule",
    description="SampleCNN on 59,049-sample frames averaged per clip (Lee et al. 2017, the 3^9 model).",
    baselines=({**_PAPER_POINT, "dropout": 0.5},)))
register(ModelSpec(
    name="mel_cnn", table="Table 2", network=f"{_NETWORKS}.mel_cnn:MelCNN",
    frontend=MelConfig(n_fft=2048, hop_length=1792, n_mels=128), segments_per_clip=1, train_crop="fixed",
    batch_size=32, network_defaults=(("dropout", 0.1),),
    module="MelCNNModule", description="2D CNN on the clip's log-Mel spectrogram (the paper's Table 2).",
    # FFT, hop (the paper's 1792 among them), Mel bands, dropout, learning rate, decay
    space=(("n_fft", [1024, 2048]), ("hop_length", [1024, 1280, 1536, 1792, 2048]), ("n_mels", [64, 96, 128]),
           ("dropout", [0.0, 0.1, 0.25, 0.5]), _LR, _GLOBAL_DECAY),
    baselines=({"n_fft": 2048, "hop_length": 1792, "n_mels": 128, "dropout": 0.1, **_PAPER_POINT},),
    small=SmallVariant(args=(*_TINY_MEL, "--n-mels", "96"))))
register(ModelSpec(
    name="lstm_mel", table="Table 3", network=f"{_NETWORKS}.lstm_mel:LSTMMel",
    frontend=MelConfig(n_fft=2048, hop_length=512, n_mels=128), segments_per_clip=4, train_crop="fixed",
    batch_size=32, network_defaults=(("dropout", 0.0),), input_norm_option=True,
    module="LSTMMelModule",
    description="BiLSTM + Conv1D on log-Mel frames, 4 segments averaged per clip (the paper's Table 3).",
    # §4.4.2, "sequence length decisive": FFT window, hop, Mel bands and segments per clip set the LSTM's sequence
    # length (frames per segment = (clip // hop + 1) // segments); learning rate and the global decay too
    space=(("n_fft", [512, 1024, 2048]), ("hop_length", [256, 512, 768, 1024, 1536, 2048, 2560, 3072]),
           ("n_mels", [64, 96, 128]), ("segments_per_clip", [1, 2, 4, 8]), _LR, _GLOBAL_DECAY),
    baselines=(
        # §4.4.2: 0.861 AUC with FFT 2048 and a stride of 2560 over whole clips ...
        {"n_fft": 2048, "hop_length": 2560, "n_mels": 128, "segments_per_clip": 1, **_PAPER_POINT},
        # ... and the best, 0.87, with 4 segments of 227 frames (hop 512; Table 3)
        {"n_fft": 2048, "hop_length": 512, "n_mels": 128, "segments_per_clip": 4, **_PAPER_POINT}),
    small=SmallVariant(args=(*_TINY_MEL, "--n-mels", "64", "--segments-per-clip", "2"))))

# From the literature (lightning_modules/networks/): Mel settings at 16 kHz as in Won et al. 2020's reimplementations
# (96 bands, n_fft 512, hop 256), batch 16 as in Won's code; sample_cnn_se's batch of 23 and its non-overlapping test
# segments are Kim et al.'s; musicnn's 3 s patches cover the clip (10 of them). Their architectures fix the input's
# shape closely (FCN and CRNN pool 96 or 128 Mel bands down to one row; musicnn's timbral filters are fractions of the
# bands), so their sweeps tune the Mel bands, dropout, learning rate and decay; no baselines are enqueued for them
# (their publications' recipes are not the suite's).
# CPU variants: fcn, crnn: 32 Mel bands, hop 512 (116 frames), every pool 2 x 2 (FCN's five take 32 -> 1 Mel rows,
# 116 -> 3 steps; CRNN's four leave 2 Mel rows stacked into 7 GRU steps); widths, dense/GRU sizes as registered.
# musicnn: 1 s chunks, 48 Mel bands, hop 512 (the architecture takes any chunk and band count; timbral filters stay
# 70% and 40% of the bands). sample_cnn_se: seven SE blocks of half the widths (64, 64, 128 x4, 256) on 6,561-sample
# frames (3^8) instead of nine on 59,049, aggregating the last three as in the paper. musicnn and sample_cnn_se
# evaluate 2 segments per clip (not the 4 and 9 that cover a 3.7 s clip).
_WON_MEL = MelConfig(n_fft=512, hop_length=256, n_mels=96)
_LITERATURE_SPACE = (("n_mels", [96, 128]), ("dropout", [0.25, 0.5]), _LR, _GLOBAL_DECAY)
_CPU_FCN_ARGS = ("--n-mels", "32", *_TINY_MEL)
register(ModelSpec(
    name="fcn", table="Choi et al. 2016 (FCN, Won et al. 2020 widths)", network=f"{_NETWORKS}.fcn:FCN",
    frontend=_WON_MEL, segments_per_clip=1, train_crop="fixed", batch_size=16, network_defaults=(("dropout", 0.5),),
    recipe="won2020", module="FCNModule",
    description="Choi et al. 2016's fully convolutional network on the whole clip's log-Mel spectrogram.",
    space=_LITERATURE_SPACE, baselines=(),
    small=SmallVariant(args=_CPU_FCN_ARGS, spec=(("network_defaults", (("dropout", 0.5), ("pools", [[2, 2]] * 5))),))))
register(ModelSpec(
    name="crnn", table="Choi et al. 2017 (CRNN)", network=f"{_NETWORKS}.crnn:CRNN", frontend=_WON_MEL,
    segments_per_clip=1, train_crop="fixed", batch_size=16, network_defaults=(("dropout", 0.5),), recipe="won2020",
    module="CRNNModule", description="Choi et al. 2017's convolutional recurrent network (4 conv layers, 2-layer GRU).",
    space=_LITERATURE_SPACE, baselines=(),
    small=SmallVariant(args=_CPU_FCN_ARGS, spec=(("network_defaults", (("dropout", 0.5), ("pools", [[2, 2]] * 4))),))))
register(ModelSpec(
    name="musicnn", table="Pons & Serra 2019 (musicnn, MTT_musicnn)", network=f"{_NETWORKS}.musicnn:Musicnn",
    frontend=_WON_MEL, segments_per_clip=None, frame_samples=3 * 16_000, train_crop="random", batch_size=16,
    network_defaults=(("dropout", 0.5),), recipe="won2020", module="MusicnnModule",
    description="Pons & Serra 2019's musicnn: timbral and temporal front-end filters, dense mid-end, pooled back-end.",
    space=_LITERATURE_SPACE, baselines=(),
    small=SmallVariant(args=("--n-mels", "48", *_TINY_MEL, "--segments-per-clip", "2"),
                       spec=(("frame_samples", 16_000),))))
register(ModelSpec(
    name="sample_cnn_se", table="Kim et al. 2018 (SampleCNN + SE + multi-level)",
    network=f"{_NETWORKS}.sample_cnn_se:SampleCNNSE", frontend=None, segments_per_clip=None, frame_samples=59_049,
    train_crop="random", batch_size=23, network_defaults=(("dropout", 0.5),), recipe="won2020",
    module="SampleCNNSEModule",
    description="Kim et al. 2018's SampleCNN with squeeze-and-excitation and multi-level aggregation.",
    baselines=(),  # the default space (learning rate, dropout, decay), as the waveform models
    small=SmallVariant(args=("--segments-per-clip", "2"), spec=(
        ("frame_samples", 6_561), ("network_defaults", (("dropout", 0.5),
                                                        ("block_channels", [64, 64, 128, 128, 128, 128, 256])))))))

# Won et al.: random chunks in training, 16 chunks averaged per clip in evaluation (8 for the transformer, as its
# authors' script); batch sizes from their code (16; the transformer's 32). Their Mel is torchaudio's (HTK scale, no
# filter norm), the suite's is Slaney with area norm: a per-band gain that the input batch norm absorbs. Sweeps: Mel
# bands and hop (choices their chunk cannot take are dropped by sweeps/spaces.py's adapt_to_clip, e.g. the plain
# short-chunk CNN needs >= 128 bands and frames), dropout, learning rate, decay; the publications' network settings
# are enqueued first, with the suite's default lr and decay (their Adam recipe is not the paper's). CPU variants: base
# width 8; the transformer reads 5 s chunks (the Harmonic CNN's) instead of 10 s, so that the two read one generated
# set of 5 s clips in the DDP tests (a set of 10 s clips would be generated and decoded for that one model),
# and the Jamendo stand-in's 4-8 s tracks hold a whole chunk.
_CHUNK = 59_049  # 3.69 s at 16 kHz (lightning_modules/networks/short_chunk.py CHUNK_SAMPLES)
register(ModelSpec(
    name="short_chunk_cnn", table="Won et al. 2020 (SMC), short-chunk CNN",
    network=f"{_NETWORKS}.short_chunk:ShortChunkCNN", frontend=MelConfig(n_fft=512, hop_length=256, n_mels=128),
    segments_per_clip=16, frame_samples=_CHUNK, train_crop="random", batch_size=16,
    network_defaults=(("residual", False), ("dropout", 0.5)), width_kwarg="channels", recipe="won2020",
    module="ShortChunkCNNModule",
    description="Won et al. 2020's short-chunk CNN: 3.69 s log-Mel chunks, 16 averaged per clip.",
    space=(("hop_length", [128, 256]), ("dropout", [0.25, 0.5]), _LR, _GLOBAL_DECAY),
    baselines=({"hop_length": 256, "dropout": 0.5, **_PAPER_POINT},), small=SmallVariant(args=_WIDTH_8)))
register(ModelSpec(
    name="short_chunk_resnet", table="Won et al. 2020 (SMC), short-chunk ResNet",
    network=f"{_NETWORKS}.short_chunk:ShortChunkCNN", frontend=MelConfig(n_fft=512, hop_length=256, n_mels=128),
    segments_per_clip=16, frame_samples=_CHUNK, train_crop="random", batch_size=16,
    network_defaults=(("residual", True), ("dropout", 0.5)), width_kwarg="channels", recipe="won2020",
    module="ShortChunkResNetModule",
    description="Won et al. 2020's short-chunk ResNet (residual blocks), the strongest of their from-scratch models.",
    space=(("hop_length", [128, 256, 512]), ("n_mels", [64, 96, 128]), ("dropout", [0.25, 0.5]), _LR, _GLOBAL_DECAY),
    baselines=({"hop_length": 256, "n_mels": 128, "dropout": 0.5, **_PAPER_POINT},),
    small=SmallVariant(args=_WIDTH_8)))
register(ModelSpec(
    name="harmonic_cnn", table="Won et al. 2020 (ICASSP; SMC evaluation), Harmonic CNN",
    network=f"{_NETWORKS}.harmonic_cnn:HarmonicCNN", frontend=None, segments_per_clip=16, frame_samples=80_000,
    train_crop="random", batch_size=16, network_defaults=(("dropout", 0.5),), width_kwarg="channels",
    recipe="won2020", module="HarmonicCNNModule",
    description="Won et al. 2020's Harmonic CNN: learnable harmonic filters on the STFT of 5 s waveform chunks.",
    baselines=({**_PAPER_POINT, "dropout": 0.5},),  # the default space (its filters are learned): lr, dropout, decay
    small=SmallVariant(args=_WIDTH_8)))
register(ModelSpec(
    name="tagging_transformer", table="Won et al. 2021 (ISMIR), music tagging transformer",
    network=f"{_NETWORKS}.tagging_transformer:TaggingTransformer",
    frontend=MelConfig(n_fft=1024, hop_length=512, n_mels=128), segments_per_clip=8, frame_samples=160_000,
    train_crop="random", batch_size=32, network_defaults=(("dropout", 0.1),), width_kwarg="channels",
    recipe="won2020", module="TaggingTransformerModule",
    description="Won et al. 2021's tagging transformer: a CNN front-end on Mel chunks, a transformer encoder, CLS "
                "output.",
    space=(("hop_length", [256, 512, 1024]), ("n_mels", [64, 96, 128]), ("dropout", [0.0, 0.1, 0.2]), _LR,
           _GLOBAL_DECAY),
    baselines=({"hop_length": 512, "n_mels": 128, "dropout": 0.1, **_PAPER_POINT},),
    small=SmallVariant(args=(*_WIDTH_8, "--n-mels", "64", "--hop-length", "1024"), spec=(("frame_samples", 80_000),))))
