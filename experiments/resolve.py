"""A run resolved once: the frozen `ResolvedRun` that every step after the command line takes.

What a run is follows from its options in one order, and that order lives here:

1. `resolve(options)`, before any data work: the model's registry entry; its Mel settings with the user's
   overrides; the dataset (its reader announces the clip length before anything is generated or decoded);
   the segment layout; the batch and the processes; and every check that can refuse the options (data
   options, the recipe's schedule and augmentation, precision and distribution, whether the network can be
   built on those inputs, naming the fix when it cannot). A refused run has cost nothing.
   With `--teacher`, the teachers too: read once, identified by their weights and checked against the
   student (`resolve_teachers`; reading a teacher is `experiments.teachers`).
2. `ResolvedRun.with_data(info)`, once the data are prepared: the tag list and the data folder, and with them
   the network's configuration.

The data module (`build_datamodule`), the LightningModule (`build_module`), the schedule
(`callbacks.schedules.build_schedule`), the Trainer and the run folder's config.json (`ResolvedRun.config`)
are all built from the resolved run. `resolve_checkpoint` resolves an evaluation the same way: the model,
its inputs and its tags come from the checkpoint, the data and the machine from the options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from callbacks.schedule_names import SCHEDULES
from datamodules.datasets.jamendo.reader import DATASET as JAMENDO
from datamodules.datasets.jamendo.reader import (
    DEFAULT_QUALITY,
    DEFAULT_SPLIT,
    DEFAULT_SUBSET,
    JamendoReader,
    SyntheticJamendoReader,
    excerpt_samples_of,
)
from datamodules.datasets.mtat.reader import SYNTHETIC, mtat_reader
from datamodules.datasets.mtat.standin import DEFAULT_N_CLIPS
from datamodules.mel_config import MelConfig
from datamodules.segments import SegmentLayout
from experiments.options import FIELDS_BY_NAME, PRECISIONS, STRATEGIES, RunOptions, flag_of
from experiments.run_folder import run_dir_of
from experiments.teachers import TeacherCheckpoint, read_teacher
from infrastructure.audio import MTAT_CLIP_SAMPLES, SAMPLE_RATE
from infrastructure.devices import gpu_count
from infrastructure.errors import ConfigError
from lightning_modules.registry import ModelSpec, input_shape, model_spec, network_config, segment_layout

MEL_OPTIONS = ("n_fft", "hop_length", "n_mels", "f_min", "f_max")
JAMENDO_ONLY = ("jamendo_split", "jamendo_subset", "jamendo_quality", "jamendo_meta", "excerpt_seconds",
                "jamendo_clip_samples", "synthetic_tracks", "synthetic_min_seconds", "synthetic_max_seconds")
"""Options that mean something for --dataset mtg-jamendo only (None: not given)."""
JAMENDO_STAND_IN_ONLY = ("synthetic_tracks", "synthetic_min_seconds", "synthetic_max_seconds")
DATASET_OPTIONS = ("dataset", "data", "split", "jamendo_split", "synthetic_clips", "synthetic_clip_samples",
                   "synthetic_seed", "synthetic_tracks", "synthetic_min_seconds", "synthetic_max_seconds")
"""Options that choose the clips and their split: a teacher must share them with its student."""
TAG_OPTIONS = ("tags", "n_tags", "jamendo_subset")
"""Options that choose the tag list."""


@dataclass(frozen=True, eq=False)
class ResolvedRun:
    """Everything a run is. Built by `resolve` (or `resolve_checkpoint`); `with_data` adds what the data say."""

    options: RunOptions
    spec: ModelSpec
    frontend: MelConfig | None
    reader: object
    """The dataset's reader (`datamodules.datasets.base.DatasetReader`)."""
    vocabulary: str
    split: str
    clip_samples: int
    """The clip length the reader announces (MTG-Jamendo: the window whole-clip models read)."""
    layout: SegmentLayout
    batch_size: int
    processes: int
    accelerator: str
    """'gpu' or 'cpu' (what --accelerator auto means here)."""
    precision: str
    tags: tuple[str, ...] = ()
    data_dir: str | None = None
    network: dict | None = None
    checkpoint: Path | None = None
    """The checkpoint an evaluation tests (None: a training run)."""
    teachers: tuple = ()
    """The teachers of a distillation or self-training run (`experiments.teachers.TeacherCheckpoint`)."""

    def with_data(self, info) -> ResolvedRun:
        """This run once its data are prepared (`datamodules.datamodule.DatasetInfo`): tags, folder, network."""
        if self.network is not None and tuple(info.tags) != self.tags:
            raise ConfigError(f"{self.checkpoint} was trained on {len(self.tags)} tags ({', '.join(self.tags[:5])}, "
                              f"...), the data give {len(info.tags)} ({', '.join(info.tags[:5])}, ...): use the "
                              "training run's --data, --tags and --n-tags")
        if self.teachers:
            from experiments.teachers import check_teacher_tags

            check_teacher_tags(self.teachers, info.tags)
        network = self.network or network_config(self.spec, input_shape(self.frontend, self.layout), len(info.tags),
                                                 **network_overrides(self.options))
        return dataclasses.replace(self, tags=tuple(info.tags), data_dir=str(info.data_dir), network=network)

    def config(self, versions: dict) -> dict:
        """config.json: the options, and under "resolved" what they resolved to (an evaluation: its checkpoint)."""
        resolved = {"data_dir": self.data_dir, "clip_samples": self.clip_samples, "sample_rate": SAMPLE_RATE,
                    "tags": list(self.tags), "layout": self.layout.to_dict(),
                    "frontend": self.frontend.to_dict() if self.frontend is not None else None,
                    "network": self.network, "batch_size": self.batch_size}
        if self.checkpoint is not None:
            return dict(self.options.to_dict(), evaluated_checkpoint=str(self.checkpoint),
                        resolved=dict(resolved, versions=versions))
        # Teachers are part of what the run is by their weights, not their paths (check_same_run compares these).
        teachers = {"teacher_identity": [t.identity for t in self.teachers]} if self.teachers else {}
        if self.teachers:
            resolved["teachers"] = [t.describe() for t in self.teachers]
        return dict(self.options.to_dict(), **teachers, resolved=dict(
            resolved, processes=self.processes, global_batch_size=self.batch_size * self.processes, versions=versions))


# ---- resolution ----------------------------------------------------------------------------------------
def resolve(options: RunOptions) -> ResolvedRun:
    """The training run `options` describe, checked before any data work (ConfigError for what cannot run)."""
    spec = model_spec(options.model)
    check_machine(options)
    check_schedule_and_augmentation(options)
    frontend = mel_settings(spec, options)
    if spec.frame_samples is not None:  # a chunk model's network is known from its chunk alone: check it first
        _build_network(options, spec, frontend, SegmentLayout(spec.frame_samples))
    reader, vocabulary, split = dataset_reader(options)
    clip_samples = reader.clip_samples()
    crop = options.train_crop or ("random" if options.dataset == JAMENDO else None)
    layout = segment_layout(spec, layout_clip_samples(options.dataset, spec, clip_samples), frontend,
                            options.segments_per_clip, crop, options.random_crops_per_clip)
    run = ResolvedRun(options, spec, frontend, reader, vocabulary, split, clip_samples, layout,
                      options.batch_size or spec.batch_size, planned_processes(options), accelerator(options),
                      str(options.precision or "32"))
    check_network_fits(run)
    check_rounds(options)
    teachers = resolve_teachers(options, layout.segment_samples, run_dir_of(options) if options.teacher else None)
    return dataclasses.replace(run, teachers=teachers) if teachers else run


def _differences(teacher: RunOptions, student: RunOptions, names: tuple[str, ...]) -> list[str]:
    return [f"{_flags([name])} {getattr(teacher, name)} vs {getattr(student, name)}" for name in names
            if getattr(teacher, name) != getattr(student, name)]


def resolve_teachers(options: RunOptions, crop_samples: int, student_run_dir: Path | None) -> tuple:
    """The run's teachers, read and checked (the module docstring); () without ``--teacher``."""
    check_distillation_options(options)
    if not options.teacher:
        return ()
    teachers = tuple(read_teacher(path) for path in options.teacher)
    seen: dict[str, TeacherCheckpoint] = {}
    for teacher in teachers:
        if teacher.identity in seen:
            raise ConfigError(f"--teacher lists one model twice ({seen[teacher.identity].given} and {teacher.given}: "
                              "the same weights); give each teacher once")
        seen[teacher.identity] = teacher
        rate = int(teacher.hparams.get("sample_rate", SAMPLE_RATE))
        if rate != SAMPLE_RATE:
            raise ConfigError(f"--teacher {teacher.label} was trained on audio at {rate} Hz; this suite's data are at "
                              f"{SAMPLE_RATE} Hz: a teacher must read what its student reads")
        if teacher.options is not None:
            dataset = _differences(teacher.options, options, DATASET_OPTIONS)
            if dataset:
                raise ConfigError(f"--teacher {teacher.label} was trained on another dataset or split "
                                  f"({'; '.join(dataset)}): a teacher must have been trained on the student's data and "
                                  "split (else its training clips can be the student's test clips)")
            tags = _differences(teacher.options, options, TAG_OPTIONS)
            if tags:
                raise ConfigError(f"--teacher {teacher.label} predicts another tag list ({'; '.join(tags)}): train the "
                                  "student with its teacher's tag options")
        if teacher.segment_samples > crop_samples:
            raise ConfigError(f"--teacher {teacher.label} ({teacher.model}) reads {teacher.segment_samples}-sample "
                              f"segments, longer than the student's {crop_samples}-sample crops: it cannot see the "
                              "crop the student sees; use teachers whose segments fit the student's crop")
        if student_run_dir is not None and (teacher.run_dir == student_run_dir
                                            or student_run_dir in teacher.checkpoint.parents):
            raise ConfigError(f"--teacher {teacher.given} is this run's own folder ({student_run_dir}): a student "
                              "cannot be its own teacher; give the student another --run-dir")
    first = teachers[0]
    for other in teachers[1:]:
        if other.tags != first.tags:
            raise ConfigError(f"--teacher {first.label} and {other.label} predict different tag lists "
                              f"({len(first.tags)} tags: {', '.join(first.tags[:3])}, ... vs {len(other.tags)}: "
                              f"{', '.join(other.tags[:3])}, ...); teachers must share one tag list")
    return teachers


def check_distillation_options(options: RunOptions) -> None:
    """One-line ConfigErrors for distillation and self-training options that cannot apply."""
    if not options.teacher:
        given = [name for name in ("distill_weight", "distill_temperature", "unlabeled_ratio", "rounds")
                 if getattr(options, name) != FIELDS_BY_NAME[name].default]
        if options.unlabeled:
            raise ConfigError("--unlabeled needs --teacher: the teachers label the unlabelled audio (self-training "
                              "starts from a model trained on the labelled data)")
        if given:
            raise ConfigError(f"{_flags(given)} appl{'y' if len(given) > 1 else 'ies'} to --teacher (distillation "
                              "and self-training)")
        return
    if options.unlabeled_ratio != FIELDS_BY_NAME["unlabeled_ratio"].default and not options.unlabeled:
        raise ConfigError("--unlabeled-ratio applies to --unlabeled DIR")
    if options.unlabeled:
        from datamodules.unlabeled import audio_files

        audio_files(options.unlabeled)


def resolve_checkpoint(options: RunOptions, checkpoint: Path, hparams: dict) -> ResolvedRun:
    """The evaluation of `checkpoint` (its `hyper_parameters`) on the data and machine `options` describe."""
    name = hparams["network_config"].get("name")
    if options.model and options.model != name:
        raise ConfigError(f"--model {options.model} does not match the checkpoint's network ({name})")
    options = options.replace(model=name)
    check_machine(options)
    reader, vocabulary, split = dataset_reader(options)
    frontend = MelConfig.from_dict(hparams["frontend"]) if hparams.get("frontend") is not None else None
    return ResolvedRun(options, model_spec(name), frontend, reader, vocabulary, split, reader.clip_samples(),
                       SegmentLayout.from_dict(dict(hparams["layout"])), options.batch_size or model_spec(name).batch_size,
                       planned_processes(options), accelerator(options), str(options.precision or "32"),
                       tags=tuple(hparams["tags"]), network=hparams["network_config"], checkpoint=Path(checkpoint))


def mel_settings(spec: ModelSpec, options: RunOptions) -> MelConfig | None:
    """The model's default Mel settings with the user's overrides (None for waveform models)."""
    if spec.frontend is None:
        given = [name for name in MEL_OPTIONS if getattr(options, name) is not None]
        if given:
            raise ConfigError(f"{spec.name} reads raw waveforms; Mel options do not apply: {_flags(given)}")
        return None
    values = spec.frontend.to_dict()
    values.update({key: getattr(options, key) for key in MEL_OPTIONS if getattr(options, key) is not None})
    if options.mel_compression:
        values["compression"] = options.mel_compression
    if options.mel_backend:
        values["backend"] = options.mel_backend
    return MelConfig.from_dict(values)


def network_overrides(options: RunOptions) -> dict:
    """The network options a user may give (`registry.network_config`'s keywords)."""
    return {"dropout": options.dropout, "width": options.width, "input_norm": options.input_norm}


def layout_clip_samples(dataset: str, spec: ModelSpec, clip_samples: int) -> int:
    """The clip length a model's segment layout is computed for.

    On MTAT, the clips' length. On MTG-Jamendo, the window whole-clip models read
    (``--jamendo-clip-samples``); a chunk model reads its own chunk from tracks of any length, so a chunk
    longer than that window is not refused (a track shorter than a chunk is zero-padded).
    """
    if dataset == JAMENDO and spec.frame_samples is not None:
        return max(clip_samples, spec.frame_samples)
    return clip_samples


# ---- the dataset ------------------------------------------------------------------------------------------
def _flags(names) -> str:
    return ", ".join(flag_of(FIELDS_BY_NAME[name]) for name in names)


def dataset_reader(options: RunOptions) -> tuple[object, str, str]:
    """(reader, vocabulary, split) of the options' dataset; ConfigError for data options that do not apply."""
    cache_root = Path(options.cache_dir)
    if options.dataset != JAMENDO:
        given = [name for name in JAMENDO_ONLY if getattr(options, name) is not None]
        if given:
            raise ConfigError(f"{_flags(given)} apply to --dataset mtg-jamendo only")
        reader = mtat_reader(options.data, cache_root, n_clips=options.synthetic_clips,
                             clip_samples=options.synthetic_clip_samples, seed=options.synthetic_seed)
        return reader, options.tags, options.split
    _check_jamendo_options(options)
    common = dict(split=DEFAULT_SPLIT if options.jamendo_split is None else options.jamendo_split,
                  subset=options.jamendo_subset or DEFAULT_SUBSET, quality=options.jamendo_quality or DEFAULT_QUALITY,
                  excerpt_samples=excerpt_samples_of(options.excerpt_seconds),
                  clip_samples=options.jamendo_clip_samples or MTAT_CLIP_SAMPLES)
    if options.data == SYNTHETIC:
        sizes = {"n_tracks": options.synthetic_tracks, "min_seconds": options.synthetic_min_seconds,
                 "max_seconds": options.synthetic_max_seconds}
        reader = SyntheticJamendoReader(cache_root, seed=options.synthetic_seed, workers=options.prepare_workers,
                                        **{k: v for k, v in sizes.items() if v is not None}, **common)
    else:
        reader = JamendoReader(options.data, meta_dir=options.jamendo_meta, **common)
    return reader, reader.vocabularies[0], reader.splits[0]


def _check_jamendo_options(options: RunOptions) -> None:
    if options.split != "folder":
        raise ConfigError(f"--split {options.split} names an MTAT split; MTG-Jamendo's split sets are "
                          "--jamendo-split 0..4")
    if options.tags != "paper":
        raise ConfigError(f"--tags {options.tags} names an MTAT vocabulary; MTG-Jamendo's tags are chosen with "
                          "--jamendo-subset (top50tags, genre, instrument, moodtheme)")
    if options.n_tags != 50:
        raise ConfigError("--n-tags applies to MTAT's vocabularies; an MTG-Jamendo subset keeps all its tags")
    if options.data == SYNTHETIC:
        mtat_sizes = [name for name, default in (("synthetic_clips", DEFAULT_N_CLIPS),
                                                 ("synthetic_clip_samples", MTAT_CLIP_SAMPLES))
                      if getattr(options, name) != default]
        if mtat_sizes:
            raise ConfigError(f"{_flags(mtat_sizes)} size the MTAT stand-in; the MTG-Jamendo stand-in's are "
                              "--synthetic-tracks, --synthetic-min-seconds, --synthetic-max-seconds "
                              "(and --jamendo-clip-samples for whole-clip models)")
        if options.jamendo_quality == "full":
            raise ConfigError("the generated MTG-Jamendo stand-in has low-quality audio only (--jamendo-quality low)")
        if options.jamendo_meta is not None:
            raise ConfigError("--jamendo-meta applies to a real MTG-Jamendo folder; the stand-in carries its split files")
    else:
        given = [name for name in JAMENDO_STAND_IN_ONLY if getattr(options, name) is not None]
        if given:
            raise ConfigError(f"{_flags(given)} size the generated stand-in (--data synthetic) only")


# ---- the machine ----------------------------------------------------------------------------------------
def accelerator(options: RunOptions) -> str:
    """'gpu' or 'cpu' for the usual values of --accelerator ('auto': a GPU when one is visible)."""
    name = str(options.accelerator or "auto").lower()
    if name == "auto":
        return "gpu" if gpu_count() > 0 else "cpu"
    return "gpu" if name in ("gpu", "cuda") else name


def check_rounds(options: RunOptions) -> None:
    """ConfigError when `--rounds` asks for several processes: the rounds run one after another in one process."""
    if options.rounds > 1 and planned_processes(options) > 1:
        raise ConfigError("--rounds runs its rounds one after another in one process; for several processes run "
                          "each round's command on its own (the previous round's folder as --teacher)")


def planned_processes(options: RunOptions) -> int:
    """Training processes the options ask for: devices per node x nodes (`--devices auto`, or -1: every GPU of
    the node, or one process on the CPU)."""
    devices = options.devices
    if isinstance(devices, (list, tuple)):
        per_node = len(devices)
    elif devices in ("auto", -1, "-1"):
        per_node = gpu_count() if accelerator(options) == "gpu" else 1
    else:
        per_node = int(devices)
    return max(1, per_node) * int(options.num_nodes or 1)


def check_machine(options: RunOptions) -> None:
    """ConfigError for precision, compilation and distribution settings that cannot work here."""
    precision = str(options.precision or "32")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "16-mixed" and accelerator(options) == "cpu":
        raise ConfigError("--precision 16-mixed needs a GPU (PyTorch has no float16 autocast for CPU training); "
                          "use bf16-mixed on CPU")
    if options.compile_backend is not None and not options.compile:
        raise ConfigError(f"--compile-backend {options.compile_backend} needs --compile")
    if (options.strategy or "auto") not in STRATEGIES:
        raise ConfigError(f"unknown strategy {options.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if options.sync_batchnorm and accelerator(options) == "cpu" and uses_ddp(options):
        raise ConfigError("--sync-batchnorm needs GPUs: PyTorch's SyncBatchNorm does not run on CPU tensors")


def uses_ddp(options: RunOptions) -> bool:
    """DDP when more than one process trains, or when asked for."""
    return (options.strategy or "auto") == "ddp" or planned_processes(options) > 1


def check_schedule_and_augmentation(options: RunOptions) -> None:
    """One-line ConfigErrors for schedule and augmentation settings that cannot work (before any data)."""
    spec = model_spec(options.model) if options.model else None
    schedule = options.schedule
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown --schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if schedule != "paper":
        paper_only = [flag for flag, on in (("--local-decay", options.local_decay > 0),
                                            ("--patience", options.patience > 0)) if on]
        if paper_only:
            raise ConfigError(f"{' and '.join(paper_only)} belong to --schedule paper (the two-level decay); with "
                              f"--schedule {schedule} set them to 0")
    if schedule == "won2020":
        from callbacks.recipe_schedules import check_stages
        check_stages(options.stage_epochs, options.stage_lrs)
    elif (options.stage_epochs, options.stage_lrs) != ((80, 20, 20), (1e-3, 1e-4, 1e-5)):
        raise ConfigError("--stage-epochs and --stage-lrs apply to --schedule won2020")
    if not 0.0 <= options.warmup < 1.0:
        raise ConfigError(f"--warmup must be a fraction of the training steps in [0, 1), got {options.warmup}")
    if options.warmup > 0 and schedule != "cosine":
        raise ConfigError("--warmup applies to --schedule cosine")
    if not 0.0 <= options.ema_decay < 1.0:
        raise ConfigError(f"--ema-decay must be in [0, 1) (0: off), got {options.ema_decay}")
    if options.ema_decay > 0 and (schedule == "won2020" or (schedule == "paper" and options.patience > 0)):
        raise ConfigError("--ema-decay does not go with a schedule that reloads the best weights (--schedule won2020, "
                          "or the paper's global decay: --patience > 0): the average would not follow the reload")
    if options.gradient_clip < 0:
        raise ConfigError(f"--gradient-clip must be >= 0 (0: off), got {options.gradient_clip}")
    if options.mixup_alpha < 0:
        raise ConfigError(f"--mixup-alpha must be >= 0 (0: off), got {options.mixup_alpha}")
    if options.mixup_alpha > 0 and spec is not None and (options.batch_size or spec.batch_size) < 2:
        raise ConfigError("--mixup-alpha mixes examples of a batch: it needs --batch-size 2 or more, got "
                          f"{options.batch_size or spec.batch_size}")
    for flag, value in (("--freq-mask", options.freq_mask), ("--time-mask", options.time_mask)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{flag} is the widest mask as a fraction of its axis, in [0, 1); got {value}")
    if (options.freq_mask or options.time_mask) and spec is not None and spec.frontend is None:
        raise ConfigError(f"SpecAugment (--freq-mask, --time-mask) masks a spectrogram; {spec.name} reads waveforms "
                          "(no Mel frontend), so it does not apply")


# ---- the network fits its input ---------------------------------------------------------------------------
def check_network_fits(run: ResolvedRun) -> None:
    """Build the run's network on the meta device for the clip length its data will have (nothing is allocated).

    A chunk longer than the clips, random crops asked of fixed segments, or Mel settings that leave too few
    frames fail in one line before the data are decoded, naming the fix where one exists: the same check
    repeated on other values of the setting at fault (a binary search) finds the largest hop, the fewest Mel
    bands or the shortest clip with which the network can be built.
    """
    try:
        _build(run.options, run.spec, run.frontend, run.clip_samples)
    except ConfigError as error:
        fixes = _fixes(run)
        if not fixes:
            raise
        raise ConfigError(f"{error}; it fits with {' or with '.join(fixes)}") from None


def _build(options: RunOptions, spec: ModelSpec, frontend: MelConfig | None, clip_samples: int) -> None:
    crop = options.train_crop or ("random" if options.dataset == JAMENDO else None)
    layout = segment_layout(spec, layout_clip_samples(options.dataset, spec, clip_samples), frontend,
                            options.segments_per_clip, crop, options.random_crops_per_clip)
    _build_network(options, spec, frontend, layout)


def _build_network(options: RunOptions, spec: ModelSpec, frontend: MelConfig | None, layout: SegmentLayout) -> None:
    import torch

    from lightning_modules.registry import build_network

    with torch.device("meta"):
        build_network(network_config(spec, input_shape(frontend, layout), options.n_tags,
                                     **network_overrides(options)))


def _fits(run: ResolvedRun, clip_samples: int, **mel) -> bool:
    try:
        options = run.options.replace(**mel) if mel else run.options
        _build(options, run.spec, mel_settings(run.spec, options), clip_samples)
    except ConfigError:
        return False
    return True


def _boundary(fits, low: int, high: int, *, largest: bool) -> int | None:
    """The largest (or smallest) value in [low, high] that fits, fitting being monotone; None when none does."""
    if high < low or not fits(low if largest else high):
        return None
    while low < high:
        if largest:  # fits up to some value, then no more
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        else:  # fits from some value on
            middle = (low + high) // 2
            low, high = (low, middle) if fits(middle) else (middle + 1, high)
    return low


def _fixes(run: ResolvedRun) -> list[str]:
    """The settings with which the network would build: a smaller hop, more Mel bands, longer clips."""
    fixes, clip = [], run.clip_samples
    if run.frontend is not None:
        hop = _boundary(lambda v: _fits(run, clip, hop_length=v), 1, run.frontend.hop_length - 1, largest=True)
        if hop is not None:
            fixes.append(f"--hop-length {hop} or less")
        mels = _boundary(lambda v: _fits(run, clip, n_mels=v), run.frontend.n_mels + 1, 512, largest=False)
        if mels is not None and hop is None:
            fixes.append(f"--n-mels {mels} or more")
    if run.spec.frame_samples is None or run.options.dataset != JAMENDO:
        shortest = _boundary(lambda v: _fits(run, v), clip + 1, 64 * clip, largest=False)
        if shortest is not None:
            where = " (--synthetic-clip-samples)" if run.options.data == SYNTHETIC else ""
            fixes.append(f"clips of at least {shortest} samples ({shortest / SAMPLE_RATE:.1f} s){where}")
    return fixes


# ---- what is built from it -------------------------------------------------------------------------------
def build_datamodule(run: ResolvedRun):
    """The run's data module (built once: its reader and layout are resolved)."""
    from datamodules.datamodule import MTATDataModule

    options = run.options
    return MTATDataModule(
        data_dir=options.data, cache_root=options.cache_dir, vocabulary=run.vocabulary, n_tags=options.n_tags,
        split=run.split, layout=run.layout.to_dict(),
        frontend=run.frontend.to_dict() if run.frontend is not None else None, batch_size=run.batch_size,
        eval_batch_size=options.eval_batch_size, num_workers=options.num_workers, seed=options.seed,
        synthetic={"n_clips": options.synthetic_clips, "clip_samples": options.synthetic_clip_samples,
                   "seed": options.synthetic_seed},
        prepare_workers=options.prepare_workers, progress=options.progress, reader=run.reader,
        unlabeled={"folder": options.unlabeled, "ratio": options.unlabeled_ratio} if options.unlabeled else None,
        keep_waveform=bool(run.teachers))


def build_module(run: ResolvedRun):
    """The run's LightningModule: the model's own class, with the run's network, inputs and optimiser."""
    from lightning_modules.architectures import module_class

    options = run.options
    augmentation = {"mixup_alpha": options.mixup_alpha, "freq_mask": options.freq_mask,
                    "time_mask": options.time_mask, "n_masks": options.n_masks}
    if not (options.mixup_alpha or options.freq_mask or options.time_mask):
        augmentation = {}  # none at their defaults: the paper's modules' hyperparameters stay as they were
    module = module_class(run.spec.name)(
        network_config=run.network, tags=list(run.tags),
        frontend=run.frontend.to_dict() if run.frontend is not None else None, layout=run.layout.to_dict(),
        sample_rate=SAMPLE_RATE, optimizer=options.optimizer, lr=options.lr, momentum=options.momentum,
        weight_decay=options.weight_decay, nesterov=options.nesterov, nonfinite_loss=options.nonfinite_loss,
        **augmentation)
    if run.teachers:
        from lightning_modules.distillation import TeacherEnsemble, teacher_from_checkpoint

        module.set_teacher(TeacherEnsemble([teacher_from_checkpoint(t.hparams, t.state, t.label) for t in run.teachers],
                                           options.distill_weight, options.distill_temperature))
    return module
