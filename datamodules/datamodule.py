"""MTATDataModule: segments of cached waveforms in, log-Mel (or waveform) batches on the device out.

`prepare_data` does the one-time work (generating the synthetic dataset when asked for, decoding
every file once into the waveform store); `setup` only reads (annotations, vocabulary, split,
store). Batches leave the loader as int16 waveforms (half the host-to-device traffic of float32)
and become float waveforms, and then log-Mel spectrograms, on the batch's device in
`on_after_batch_transfer`, so Mel settings are hyperparameters that need no re-preprocessing.

Sampling is owned here rather than by Lightning (`use_distributed_sampler=False` in the Trainer):
the order and the random crops of an epoch follow from (seed, epoch) alone, so a resumed run sees
exactly the batches an uninterrupted one would, on one device or many; evaluation splits the
segments across ranks without padding duplicates, so clip-level metrics are exact under DDP.

Nothing here reads a dataset's files or knows a store's layout: a `datamodules.datasets.base.DatasetReader`
provides the clips, their length, vocabularies and splits, and the spec of the store that holds them
(`datamodules.datasets.base.StoreSpec`: MTAT's fixed-length rows, MTG-Jamendo's ragged tracks); by default
the reader is the MTAT-layout reader of ``data_dir`` (`datamodules.datasets.mtat.reader.mtat_reader`), and
another dataset plugs in through ``reader=``. Every dataset is read the same way: segments of a store's
rows (`SegmentDataset`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.datasets.base import STAGES, DatasetReader
from datamodules.datasets.mtat.reader import mtat_reader
from datamodules.datasets.mtat.standin import DEFAULT_N_CLIPS
from datamodules.frontend import MelConfig, build_frontend
from datamodules.sampling import EpochSampler, loader_generator
from datamodules.segments import SegmentLayout
from datamodules.store.reader import WaveformStore, open_store
from datamodules.unlabeled import MixedDataset, UnlabeledPool
from infrastructure.audio import INT16_SCALE, MTAT_CLIP_SAMPLES
from infrastructure.errors import ConfigError, DataError


@dataclass(frozen=True)
class DatasetInfo:
    """What a model must know about the data before it is built."""

    data_dir: Path
    clip_samples: int
    tags: tuple[str, ...]


@dataclass(frozen=True)
class SyntheticSpec:
    """Size, clip length and seed of the generated stand-in dataset."""

    n_clips: int = DEFAULT_N_CLIPS
    clip_samples: int = MTAT_CLIP_SAMPLES
    seed: int = 0


MAX_DEFAULT_WORKERS = 8


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: SLURM's or taskset's allocation, not the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_num_workers(processes_on_node: int = 1) -> int:
    """Loader workers per training process: its share of the cores, less one for the process itself (<= 8).

    Processes started by srun each get their own CPU allocation (`--cpus-per-task`); processes
    that Lightning starts on one node share one, so it is divided among them. A process with a
    single core loads in the main process (0 workers).
    """
    cores = usable_cores()
    if os.environ.get("SLURM_CPUS_PER_TASK") and os.environ.get("SLURM_LOCALID") is not None:
        cores = min(cores, int(os.environ["SLURM_CPUS_PER_TASK"]))
    else:
        cores //= max(1, processes_on_node)
    return max(0, min(MAX_DEFAULT_WORKERS, cores - 1))


class SegmentDataset(Dataset):
    """Item `position * per_clip + k`: segment k of a clip (or track), read from the waveform store.

    Returns a dict with `waveform` (int16, segment_samples), `target` (float32, n_tags), `clip` (the
    clip's row in the reader's clips) and `segment` (k). Indexed with `(item, epoch)` pairs from
    `EpochSampler`; a plain int means epoch 0.

    Where a segment starts depends on its row's stored length (``lengths``: one clip length for MTAT,
    each track's own for MTG-Jamendo):

    * training with random crops: anywhere in the row, drawn from a generator keyed by (seed, epoch,
      item), never from the worker's global generators: persistent workers are seeded once when they
      start, which is epoch 0 in one run and the resumed epoch in a resumed one, so anything random
      here must be keyed the same way for a resume to be exact (``layout.random_crops`` crops per row
      in an epoch, else ``segments_per_clip``);
    * evaluation (and training on fixed segments): ``segments_per_clip`` segments spread evenly from the
      row's start to its end (`SegmentLayout.track_starts`, which is `SegmentLayout.starts` wherever the
      segment fits), whose predictions the module averages per row.

    A row shorter than a segment is zero-padded at its end (every segment of it then starts at 0): a
    fixed-length store refuses such segments (`datamodules.store.fixed.FixedSpec.check_segments`); the real
    MTG-Jamendo has no track shorter than 30 s, so it only matters for short chunks of its stand-in.
    """

    def __init__(self, store_dir: Path, rows: np.ndarray, labels: np.ndarray, lengths: np.ndarray,
                 layout: SegmentLayout, random_crop: bool, seed: int):
        self.store_dir = Path(store_dir)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.float32)  # one row per store row
        self.lengths = np.asarray(lengths, dtype=np.int64)  # stored samples per store row
        self.layout, self.random_crop, self.seed = layout, random_crop, seed
        self.per_clip = layout.items_per_clip(random_crop)
        self._store: WaveformStore | None = None  # opened lazily in each worker process

    def __len__(self) -> int:
        return len(self.rows) * self.per_clip

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_store"] = None
        return state

    @property
    def fixed_crops(self) -> bool:
        """Whether every item reads the same samples in every epoch: no random crops, or no row longer than a
        segment (a random crop of such a row starts at 0)."""
        return not self.random_crop or bool(np.all(self.lengths[self.rows] <= self.layout.segment_samples))

    def start(self, item: int, epoch: int = 0) -> int:
        """Where item ``item`` of epoch ``epoch`` starts in its row (samples)."""
        position, segment = divmod(int(item), self.per_clip)
        length = int(self.lengths[self.rows[position]])
        if self.random_crop:
            room = max(0, length - self.layout.segment_samples)
            return int(np.random.default_rng([self.seed, epoch, int(item)]).integers(0, room + 1))
        return int(self.layout.track_starts(length)[segment])

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        item, epoch = key if isinstance(key, tuple) else (key, 0)
        position, segment = divmod(int(item), self.per_clip)
        row = int(self.rows[position])
        if self._store is None:
            self._store = open_store(self.store_dir)
        samples = self._store.segment(row, self.start(item, epoch), self.layout.segment_samples)
        return {
            "waveform": torch.from_numpy(samples),
            "target": torch.from_numpy(self.labels[row]),
            "clip": torch.tensor(row, dtype=torch.long),
            "segment": torch.tensor(segment, dtype=torch.long),
        }


class MTATDataModule(pl.LightningDataModule):
    """MagnaTagATune (or its synthetic stand-in) as segment batches, with the frontend on the device.

    Args:
        data_dir: a folder laid out like MTAT (annotations_final.csv + mp3/<0-f>/), or "synthetic".
        cache_root: where the waveform store (and the synthetic dataset) live.
        vocabulary: tag vocabulary, "paper" (merged synonyms, top n_tags) or "standard" (the literature's top 50).
        n_tags: how many tags the vocabulary keeps (a dataset with fewer keeps all it has).
        split: "folder" (MTAT folders 0-b / c / d-f) or "clean" (the Lee/Won lists).
        layout: segment layout (`SegmentLayout.to_dict()`).
        frontend: Mel settings (`MelConfig.to_dict()`), or None to feed raw waveforms.
        batch_size / eval_batch_size: segments per training / evaluation batch.
        num_workers: loader worker processes (None: `default_num_workers`, from the cores of each training process).
        seed: drives the epoch order and random crops.
        synthetic: size, clip length and seed of the generated dataset (with data_dir="synthetic").
        prepare_workers: decoding processes for the store (None: the usable cores).
        reader: the dataset to read (`datamodules.datasets.base.DatasetReader`); None: the MTAT-layout
            reader of ``data_dir`` (`datamodules.datasets.mtat.reader.mtat_reader`). ``vocabulary`` and ``split``
            name one of the reader's vocabularies and splits.
        unlabeled: self-training's pool (`datamodules.unlabeled.UnlabeledPool.to_dict()`): a folder of audio decoded
            once into the cache, whose crops join the training items (`datamodules.unlabeled.MixedDataset`); None:
            the labelled clips alone.
        keep_waveform: leave the int16 waveform in each batch beside the model's input (distillation's teachers
            read the crop through their own frontends).
    """

    def __init__(self, data_dir: str, cache_root: str, *, vocabulary: str = "paper", n_tags: int = 50,
                 split: str = "folder", layout: dict, frontend: dict | None = None, batch_size: int = 16,
                 eval_batch_size: int | None = None, num_workers: int | None = None,
                 pin_memory: bool | None = None, seed: int = 0, synthetic: dict | None = None,
                 prepare_workers: int | None = None, progress: bool = True, reader: DatasetReader | None = None,
                 unlabeled: dict | None = None, keep_waveform: bool = False):
        super().__init__()
        self.synthetic = SyntheticSpec(**(synthetic or {}))
        self.cache_root = Path(cache_root).expanduser().resolve()
        if reader is None:
            s = self.synthetic
            reader = mtat_reader(data_dir, self.cache_root, n_clips=s.n_clips, clip_samples=s.clip_samples,
                                 seed=s.seed)
        self.reader = reader
        if vocabulary not in reader.vocabularies:
            raise ConfigError(f"unknown tag vocabulary {vocabulary!r} (--tags); "
                              f"choose one of: {', '.join(reader.vocabularies)}")
        if split not in reader.splits:
            raise ConfigError(f"unknown split {split!r} (--split); choose one of: {', '.join(reader.splits)}")
        self.save_hyperparameters(ignore=["reader"])
        self.layout = SegmentLayout.from_dict(layout)
        self.frontend_config = MelConfig.from_dict(frontend) if frontend is not None else None
        self.frontend = build_frontend(self.frontend_config)
        self._datasets: dict[str, SegmentDataset] = {}
        self.tags: tuple[str, ...] = ()
        self.unlabeled = UnlabeledPool.from_dict(unlabeled) if unlabeled else None
        self._pool_prepared = False

    # ---- where things are -------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.reader.data_dir

    @property
    def cache_dir(self) -> Path:
        """The folder of the dataset's waveform store (the reader's store spec names it)."""
        return self.reader.store_spec().folder(self.cache_root, self.reader)

    def open_prepared(self) -> WaveformStore:
        """The prepared waveform store (and the unlabelled pool's, when there is one); DataError when not ready."""
        if self.unlabeled is not None:
            self.unlabeled.open(self.cache_root)
        return open_store(self.cache_dir)

    def example_waveform(self, row: int) -> np.ndarray:
        """The int16 audio of row ``row`` a figure shows: its middle clip-length part (an MTAT clip: all of it)."""
        store = self.open_prepared()
        length, window = int(store.lengths[row]), self.reader.clip_samples()
        return store.segment(row, max(0, (length - window) // 2), min(length, window))

    # ---- one-time work --------------------------------------------------------------------
    def prepare_data(self) -> None:
        """The reader's one-time work (e.g. generating the synthetic dataset), then every clip decoded once into
        the store."""
        try:
            self.cache_root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.cache_root):
                pass
        except OSError as error:
            raise DataError(f"cache folder {self.cache_root} (--cache-dir) is not writable: "
                            f"{error.strerror or error}") from None
        self.reader.prepare(progress=self.hparams.progress)
        clips = self.reader.read()
        # Vocabulary and split problems show up now, not after the (long) decoding.
        clips.vocabulary(self.hparams.vocabulary, self.hparams.n_tags)
        clips.split(self.hparams.split)
        self.reader.store_spec().write(self.cache_dir, clips, self.reader.audio_root(),
                                       workers=self.hparams.prepare_workers or usable_cores(),
                                       progress=self.hparams.progress)
        if self.unlabeled is not None and not self._pool_prepared:  # Lightning calls this again in fit and test
            report = self.unlabeled.prepare(self.cache_root, workers=self.hparams.prepare_workers or usable_cores(),
                                            progress=self.hparams.progress)
            print(report, file=sys.stderr, flush=True)
            self._pool_prepared = True

    def dataset_info(self) -> DatasetInfo:
        """Clip length and tag list of the prepared dataset (what the model is built from)."""
        clips = self.reader.read()
        vocabulary = clips.vocabulary(self.hparams.vocabulary, self.hparams.n_tags)
        return DatasetInfo(self.data_dir, self.reader.clip_samples(), tuple(vocabulary.tags))

    def clip_ids(self) -> np.ndarray:
        """The dataset's clip id of every annotation row (what saved predictions name clips by)."""
        return np.asarray(self.reader.read().clip_ids)

    # ---- reading ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        clips = self.reader.read()
        spec = self.reader.store_spec()
        spec.check_segments(self.layout)
        vocabulary = clips.vocabulary(self.hparams.vocabulary, self.hparams.n_tags)
        self.tags = tuple(vocabulary.tags)
        store = open_store(self.cache_dir)
        spec.check(store)
        if store.keys != [str(int(key)) for key in clips.clip_ids]:
            raise DataError(f"{self.cache_dir}: the waveform store holds other {store.layout.unit} than "
                            f"{self.data_dir} lists; delete the folder to rebuild it")
        usable = np.zeros(len(clips.clip_ids), dtype=bool)
        usable[store.ok_rows] = True
        for name, rows in clips.split(self.hparams.split).items():
            rows = np.asarray(rows)[usable[np.asarray(rows)]]
            if len(rows) == 0:
                raise DataError(f"{self.data_dir}: the {self.hparams.split!r} split has no decodable {name} "
                                f"{store.layout.unit}")
            self._datasets[name] = SegmentDataset(
                self.cache_dir, rows, vocabulary.labels, store.lengths, self.layout,
                random_crop=(name == "train" and self.layout.train_crop == "random"), seed=self.hparams.seed)
        if self.unlabeled is not None:
            labelled, pool_store = self._datasets["train"], self.unlabeled.open(self.cache_root)
            pool = SegmentDataset(pool_store.folder, pool_store.ok_rows,
                                  np.zeros((len(pool_store), len(self.tags)), dtype=np.float32), pool_store.lengths,
                                  UnlabeledPool.crop_layout(self.layout), random_crop=True,
                                  seed=UnlabeledPool.crop_seed(self.hparams.seed))
            self._datasets["train"] = MixedDataset(labelled, pool, self.unlabeled.per_epoch(len(labelled)),
                                                   self.hparams.seed)

    def dataset(self, stage: str) -> SegmentDataset | MixedDataset:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        if not self._datasets:
            raise RuntimeError("call setup() before asking for datasets")
        return self._datasets[stage]

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _processes_on_this_node(self) -> int:
        trainer = self.trainer
        if trainer is None:
            return 1
        return max(1, trainer.world_size // max(1, trainer.num_nodes))

    def _num_workers(self) -> int:
        if self.hparams.num_workers is not None:
            return self.hparams.num_workers
        return default_num_workers(self._processes_on_this_node())

    def _pin_memory(self) -> bool:
        """Pinned host memory speeds up copies to a GPU only: on when this process trains on CUDA."""
        if self.hparams.pin_memory is not None:
            return self.hparams.pin_memory
        trainer = self.trainer
        if trainer is not None:
            return trainer.strategy.root_device.type == "cuda"
        return torch.cuda.is_available()

    def _next_train_epoch(self) -> int:
        """The epoch the training loader is created for (0 without a trainer).

        Lightning creates the training iterator when `fit` starts and calls the sampler's
        `set_epoch` only afterwards; a multi-process iterator draws its first indices from the
        sampler as it is created. A fresh run starts at epoch 0 either way, but a resumed run would
        read epoch 0's order (and random crops) in the epoch it resumes. So the sampler starts at
        the fit loop's epoch counter, the value Lightning passes to `set_epoch` for that epoch.
        """
        trainer = self.trainer
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_progress.current.processed)

    def _loader(self, stage: str) -> DataLoader:
        training = stage == "train"
        rank, world = self._rank_and_world()
        dataset = self.dataset(stage)
        sampler = EpochSampler(len(dataset), shuffle=training, pad=training, seed=self.hparams.seed,
                               rank=rank, world_size=world)
        if training:
            sampler.set_epoch(self._next_train_epoch())
        workers = self._num_workers()
        pin = self._pin_memory()
        batch_size = self.hparams.batch_size if training else (self.hparams.eval_batch_size or self.hparams.batch_size)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          pin_memory=pin, persistent_workers=workers > 0, drop_last=False,
                          generator=loader_generator(self.hparams.seed, stage, rank))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    # ---- on the device ----------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Turn the int16 waveforms into the model's input (log-Mel or float waveform) on their device (the waveform
        stays in the batch with ``keep_waveform``)."""
        waveform = batch["waveform"] if self.hparams.get("keep_waveform") else batch.pop("waveform")
        if self.frontend_device != waveform.device:
            self.frontend.to(waveform.device)
        batch["input"] = self.frontend(waveform.float() / INT16_SCALE)
        return batch

    @property
    def frontend_device(self) -> torch.device:
        buffer = next(iter(self.frontend.buffers()), None)
        return buffer.device if buffer is not None else torch.device("cpu")

    def state_dict(self) -> dict:
        return {"tags": list(self.tags)}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = tuple(state_dict.get("tags", ()))
        if saved and self.tags and saved != self.tags:
            raise ConfigError("the checkpoint was trained on another tag list than this data module provides")
