"""Writing a generated stand-in into its folder, the same way for every dataset.

A stand-in (`datamodules.datasets.mtat.standin`, `datamodules.datasets.jamendo.standin`) is generated
once into a folder and reused. `StandInFolder` holds what both do with that folder: the options are
checked (`check_option`), the folder is locked while it is generated, a complete folder with the same
parameters is reused (its metadata file, written last, says so), an interrupted generation is finished
(a marker file names the parameters it was started with; every audio file present is whole, since each
is written atomically), and the audio files are encoded by worker processes (`infrastructure.workers`)
with a progress bar. Ctrl-C stops the workers at once and raises `Interrupted`, saying how many files
are kept; rerunning the same command generates the rest.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infrastructure.errors import ConfigError, DataError, Interrupted
from infrastructure.io import TEMP_GLOB, file_lock, write_bytes_atomic
from infrastructure.workers import WorkerPool


def check_option(name: str, value, minimum: int) -> int:
    """``value`` as an int, or ConfigError when it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"synthetic dataset option {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class StandInFolder:
    """The marker files of one kind of stand-in folder, and the procedure that fills one.

    Attributes:
        title: what the stand-in is called in messages ("synthetic MTG-Jamendo").
        dataset: the dataset it stands in for ("MTAT").
        metadata_file: written last, with the parameters: its presence means the folder is complete.
        partial_file: marks a folder being (or, after an interruption, left) generated.
        lock_file: held (flock) while generating, so two processes never write one folder at once.
        unit: what an audio file is called in messages ("clips").
        audio_glob: the audio files, relative to the folder (temporary files are hidden ones).
    """

    title: str
    dataset: str
    metadata_file: str
    partial_file: str
    lock_file: str
    unit: str
    audio_glob: str

    def written(self, folder: Path) -> int:
        """How many audio files ``folder`` holds (each written atomically, so each is whole)."""
        return sum(1 for path in folder.glob(self.audio_glob) if not path.name.startswith("."))

    def read_metadata(self, folder: Path) -> dict | None:
        """The parsed metadata file of ``folder``, or None when it has none (DataError when it is unreadable)."""
        path = Path(folder) / self.metadata_file
        if not path.exists():
            return None
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read {self.title} metadata: {exc}") from exc
        if not isinstance(meta, dict):
            raise DataError(f"{path}: {self.title} metadata is not a JSON object")
        return meta

    def lock(self, folder: Path):
        """The exclusive lock on ``folder`` (`infrastructure.io.file_lock`), created with the folder if needed."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        return file_lock(Path(folder) / self.lock_file)

    def start(self, folder: Path, params: dict, generated: Sequence[Path]) -> bool:
        """Under `lock`: False when ``folder`` is complete with ``params``; else mark it as being generated with
        them and return True. What an interrupted generation with other parameters left (``generated``) is
        deleted; a folder holding such files without the marker was not written here and is refused.

        Raises:
            ConfigError: a complete stand-in with other parameters, or files this generator did not write.
        """
        meta = self.read_metadata(folder)
        if meta is not None:
            found = {key: meta.get(key) for key in params}
            if found == params:
                return False
            raise ConfigError(f"{folder}: holds a complete {self.title} with other parameters {found}; asked for "
                              f"{params}. Use another folder or delete this one.")
        partial = folder / self.partial_file
        if partial.exists():
            try:
                previous = json.loads(partial.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                previous = None
            if previous != params:  # started with other parameters: its files cannot be reused
                for path in generated:
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
        elif any(path.exists() for path in generated):
            raise ConfigError(f"{folder}: already holds {self.dataset} files that were not written by the synthetic "
                              "generator; refusing to overwrite them. Use an empty folder.")
        write_bytes_atomic(partial, json.dumps(params, indent=1).encode())
        return True

    def finish(self, folder: Path, meta: dict) -> None:
        """Mark ``folder`` complete: the metadata file (written last), then the marker of work in progress removed."""
        write_bytes_atomic(folder / self.metadata_file, json.dumps(meta, indent=1).encode())
        (folder / self.partial_file).unlink(missing_ok=True)

    @contextlib.contextmanager
    def generating(self, folder: Path, total: int) -> Iterator[None]:
        """Hold the folder's lock for the block; Ctrl-C in it raises `Interrupted`, counting the files kept."""
        try:
            with self.lock(folder):
                yield
        except KeyboardInterrupt as stop:
            raise Interrupted(f"generating the stand-in: {self.written(folder)} of {total} {self.unit} are written "
                              f"in {folder} (kept); rerun the same command to generate the rest") from stop

    def encode(self, folder: Path, task: Callable[..., int], chunks: Iterable[tuple], total: int, done: int, *,
               workers: int, progress: bool) -> None:
        """Run ``task(*chunk)`` (each writes its audio files atomically and returns how many) for every chunk, in
        ``workers`` processes, with a progress bar of ``total`` files of which ``done`` exist; stale temporary
        files of an interrupted run are removed first."""
        for pattern in (f"*/{TEMP_GLOB}", f"*/*/{TEMP_GLOB}"):
            for stale in folder.glob(pattern):
                stale.unlink(missing_ok=True)
        from tqdm import tqdm

        with tqdm(total=total, initial=done, desc=f"{self.title} -> {folder.name}", unit=self.unit.removesuffix("s"),
                  file=sys.stderr, disable=not progress) as bar, WorkerPool(workers) as pool:
            for written in pool.imap(task, chunks):
                bar.update(written)
