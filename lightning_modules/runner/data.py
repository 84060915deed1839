"""The data side of a run: the model's frontend and segments, the data module, one-time preparation."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from datamodules.cache import open_cache
from datamodules.datamodule import DatasetInfo, MTATDataModule
from datamodules.errors import ConfigError, DataError
from datamodules.frontend import MelConfig
from datamodules.io import file_lock, local_rank
from lightning_modules.config import RunOptions
from lightning_modules.registry import MODELS, ModelSpec


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]


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


def build_datamodule(options: RunOptions, spec: ModelSpec, layout: dict | None = None,
                     frontend: MelConfig | None = None) -> MTATDataModule:
    """The data module for these options; `layout` may be omitted before the clip length is known."""
    return MTATDataModule(
        data_dir=options.data, cache_root=options.cache_dir, vocabulary=options.tags, n_tags=options.n_tags,
        split=options.split, layout=layout or {"segment_samples": 1, "segments_per_clip": 1},
        frontend=frontend.to_dict() if frontend is not None else None,
        batch_size=options.batch_size or spec.batch_size, eval_batch_size=options.eval_batch_size,
        num_workers=options.num_workers, seed=options.seed,
        synthetic={"n_clips": options.synthetic_clips, "clip_samples": options.synthetic_clip_samples,
                   "seed": options.synthetic_seed},
        prepare_workers=options.prepare_workers, progress=options.progress)

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
                    open_cache(datamodule.cache_dir)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
            time.sleep(5)
    return datamodule.dataset_info()

