"""The data side of a run: the model's frontend and segments, the data module, one-time preparation."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from datamodules.datamodule import DatasetInfo, MTATDataModule, SyntheticSpec
from datamodules.datasets.jamendo.reader import DATASET as JAMENDO
from datamodules.datasets.jamendo.reader import (
    DEFAULT_QUALITY,
    DEFAULT_SPLIT,
    DEFAULT_SUBSET,
    JamendoReader,
    SyntheticJamendoReader,
    excerpt_samples_of,
)
from datamodules.datasets.mtat.reader import SYNTHETIC
from datamodules.frontend import MelConfig
from experiments.options import RunOptions
from infrastructure.audio import MTAT_CLIP_SAMPLES
from infrastructure.errors import ConfigError, DataError
from infrastructure.io import file_lock, local_rank
from infrastructure.locations import default_cache_root
from lightning_modules.registry import ModelSpec, model_spec  # noqa: F401 (model_spec: callers import it from here)


def frontend_config(spec: ModelSpec, options: RunOptions) -> MelConfig | None:
    """The model's default Mel settings with the user's overrides (None for waveform models)."""
    if spec.frontend is None:
        mel_options = ("n_fft", "hop_length", "n_mels", "f_min", "f_max")
        given = [name for name in mel_options if getattr(options, name) is not None]
        if given:
            raise ConfigError(f"{spec.name} reads raw waveforms; Mel options do not apply: "
                              + ", ".join("--" + g.replace("_", "-") for g in given))
        return None
    values = spec.frontend.to_dict()
    for key in ("n_fft", "hop_length", "n_mels", "f_min", "f_max"):
        if getattr(options, key) is not None:
            values[key] = getattr(options, key)
    if options.mel_compression:
        values["compression"] = options.mel_compression
    if options.mel_backend:
        values["backend"] = options.mel_backend
    return MelConfig.from_dict(values)


JAMENDO_ONLY = ("jamendo_split", "jamendo_subset", "jamendo_quality", "jamendo_meta", "excerpt_seconds",
                "jamendo_clip_samples", "synthetic_tracks", "synthetic_min_seconds", "synthetic_max_seconds")
"""Options that mean something for --dataset mtg-jamendo only (None: not given)."""

JAMENDO_STAND_IN_ONLY = ("synthetic_tracks", "synthetic_min_seconds", "synthetic_max_seconds")


def _flags(names) -> str:
    return ", ".join("--" + name.replace("_", "-") for name in names)


def check_data_options(options: RunOptions) -> None:
    """One ConfigError for a combination of data options that does not apply, before any data is touched."""
    if options.dataset != JAMENDO:
        given = [name for name in JAMENDO_ONLY if getattr(options, name) is not None]
        if given:
            raise ConfigError(f"{_flags(given)} apply to --dataset mtg-jamendo only")
        return
    if options.split != "folder":
        raise ConfigError(f"--split {options.split} names an MTAT split; MTG-Jamendo's split sets are "
                          "--jamendo-split 0..4")
    if options.tags != "paper":
        raise ConfigError(f"--tags {options.tags} names an MTAT vocabulary; MTG-Jamendo's tags are chosen with "
                          "--jamendo-subset (top50tags, genre, instrument, moodtheme)")
    if options.n_tags != 50:
        raise ConfigError("--n-tags applies to MTAT's vocabularies; an MTG-Jamendo subset keeps all its tags")
    if options.data == SYNTHETIC:
        mtat_sizes = [name for name, default in (("synthetic_clips", SyntheticSpec.n_clips),
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
    excerpt_samples_of(options.excerpt_seconds)


def build_reader(options: RunOptions):
    """The dataset reader of these options (None: MTAT's, which the data module builds itself)."""
    if options.dataset != JAMENDO:
        return None
    common = dict(split=DEFAULT_SPLIT if options.jamendo_split is None else options.jamendo_split,
                  subset=options.jamendo_subset or DEFAULT_SUBSET, quality=options.jamendo_quality or DEFAULT_QUALITY,
                  excerpt_samples=excerpt_samples_of(options.excerpt_seconds),
                  clip_samples=options.jamendo_clip_samples or MTAT_CLIP_SAMPLES)
    if options.data == SYNTHETIC:
        spec = {"n_tracks": options.synthetic_tracks, "min_seconds": options.synthetic_min_seconds,
                "max_seconds": options.synthetic_max_seconds}
        cache_root = Path(options.cache_dir).expanduser().resolve() if options.cache_dir else default_cache_root()
        return SyntheticJamendoReader(cache_root, seed=options.synthetic_seed, workers=options.prepare_workers,
                                      **{k: v for k, v in spec.items() if v is not None}, **common)
    return JamendoReader(options.data, meta_dir=options.jamendo_meta, **common)


def default_train_crop(options: RunOptions) -> str | None:
    """``--train-crop`` as given, else random chunks anywhere in a track on MTG-Jamendo (None: the model's, on MTAT)."""
    if options.train_crop is None and options.dataset == JAMENDO:
        return "random"
    return options.train_crop


def layout_clip_samples(options: RunOptions, spec: ModelSpec, clip_samples: int) -> int:
    """The clip length a model's segment layout is computed for.

    On MTAT, the clips' length. On MTG-Jamendo, the window whole-clip models read
    (``--jamendo-clip-samples``); a chunk model reads its own chunk from tracks of any length, so a chunk
    longer than that window is not refused (a track shorter than a chunk is zero-padded).
    """
    if options.dataset == JAMENDO and spec.frame_samples is not None:
        return max(clip_samples, spec.frame_samples)
    return clip_samples


def build_datamodule(options: RunOptions, spec: ModelSpec, layout: dict | None = None,
                     frontend: MelConfig | None = None) -> MTATDataModule:
    """The data module for these options; `layout` may be omitted before the clip length is known."""
    check_data_options(options)
    reader = build_reader(options)
    vocabulary, split = options.tags, options.split
    if reader is not None:
        vocabulary, split = reader.vocabularies[0], reader.splits[0]
    return MTATDataModule(
        data_dir=options.data, cache_root=options.cache_dir, vocabulary=vocabulary, n_tags=options.n_tags,
        split=split, layout=layout or {"segment_samples": 1, "segments_per_clip": 1},
        frontend=frontend.to_dict() if frontend is not None else None,
        batch_size=options.batch_size or spec.batch_size, eval_batch_size=options.eval_batch_size,
        num_workers=options.num_workers, seed=options.seed,
        synthetic={"n_clips": options.synthetic_clips, "clip_samples": options.synthetic_clip_samples,
                   "seed": options.synthetic_seed},
        prepare_workers=options.prepare_workers, progress=options.progress, reader=reader)

@contextlib.contextmanager
def _prepare_lock(cache_root: Path):
    """The lock that serialises data preparation (processes on other nodes of a shared file system wait too)."""
    lock = cache_root / ".prepare.lock"
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError as error:  # e.g. --cache-dir under a file, or in a read-only folder
        raise DataError(f"cache folder {cache_root} (--cache-dir) is not writable: "
                        f"{error.strerror or error}") from None
    with file_lock(lock):
        yield


def prepare_data_once(datamodule: MTATDataModule, timeout_s: float = 24 * 3600) -> DatasetInfo:
    """Do the data module's one-time work on one process per node; the others wait for it.

    This runs before the Trainer exists (the model's size depends on the data), so Lightning's own
    prepare_data barrier is not available yet: a lock file serialises processes that share a file
    system, and processes with a non-zero local rank wait until the cache can be opened.
    """
    if local_rank() == 0:
        with _prepare_lock(datamodule.cache_root):
            datamodule.prepare_data()
    else:
        deadline = time.monotonic() + timeout_s
        while True:
            with _prepare_lock(datamodule.cache_root):
                try:
                    datamodule.dataset_info()
                    datamodule.open_prepared()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
            time.sleep(5)
    return datamodule.dataset_info()

