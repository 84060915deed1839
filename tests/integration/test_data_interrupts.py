"""Ctrl-C during the data stages of a command: generating a stand-in, decoding into the store (both layouts).

A real SIGINT goes to the command's whole process group, as a terminal sends it, once the stage has visibly
begun (tests/support/interrupting.py). The command must end within 2 s with status 130, say in its last line
exactly what is kept and how to continue, print no traceback (neither it nor its worker processes) and leave
no process behind; and the rerun must continue from what was kept and end with what an uninterrupted run
gives, byte for byte.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from datamodules.datasets.jamendo.standin import generate_synthetic_jamendo, synthetic_jamendo_dir_name
from datamodules.datasets.mtat.annotations import read_annotations
from datamodules.datasets.mtat.reader import find_audio_root
from datamodules.datasets.mtat.standin import generate_synthetic_mtat, synthetic_dir_name
from datamodules.store.fixed import ROW_DELAY_ENV, prepare_cache
from datamodules.store.format import INDEX_FILE, JOURNAL_FILE, MANIFEST_FILE, PARTIAL_DIR, WAVEFORMS_FILE
from datamodules.store.ragged import write_ragged_store
from tests.support.helpers import TEST_MEL_BACKEND
from tests.support.interrupting import Stopped, interrupt
from tests.support.paths import REPO_ROOT
from tests.support.ragged_items import ITEMS, generated_decoder, recording_decoder

pytestmark = pytest.mark.slow

N_CLIPS = 160
"""Five chunks of 32 rows to decode: Ctrl-C lands after the first is journaled, with the others in flight."""
CLIP_SAMPLES = 16_000
"""1 s clips (mel_cnn at hop 256: 63 frames), so that generating and decoding them takes little time."""
N_TRACKS = 30
MTAT_ARGS = ["--data", "synthetic", "--synthetic-clips", str(N_CLIPS), "--synthetic-clip-samples", str(CLIP_SAMPLES)]
JAMENDO_ARGS = ["--dataset", "mtg-jamendo", "--data", "synthetic", "--synthetic-tracks", str(N_TRACKS),
                "--synthetic-min-seconds", "1", "--synthetic-max-seconds", "2", "--jamendo-clip-samples",
                str(CLIP_SAMPLES)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """This file's cache folder: the MTAT stand-in the first test interrupts and completes, the next decodes."""
    return tmp_path_factory.mktemp("interrupts")


def _env(**extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), **extra)


def _command(cache: Path, run_dir: Path, data_args: list[str]) -> list[str]:
    return [sys.executable, "run.py", "--model", "mel_cnn", "--hop-length", "256", "--n-mels", "96", *data_args,
            "--cache-dir", str(cache), "--prepare-workers", "2", "--num-workers", "0", "--no-figures",
            "--logger", "none", "--no-progress", "--mel-backend", TEST_MEL_BACKEND, "--max-epochs", "1",
            "--limit-train-batches", "2", "--limit-val-batches", "1", "--limit-test-batches", "1",
            "--run-dir", str(run_dir)]


def _stopped_cleanly(stop: Stopped, last_line: str) -> re.Match:
    """The checks every interrupted stage passes; the match of its last stderr line against ``last_line``."""
    print(f"ended {stop.seconds:.2f} s after Ctrl-C")  # shown with pytest -s
    assert stop.returncode == 130, stop.stderr
    assert stop.seconds < 2, f"{stop.seconds:.2f} s from Ctrl-C to the end of the command"
    assert "Traceback" not in stop.stderr, stop.stderr
    assert not stop.survivors, f"processes of the command still running: {stop.survivors}"
    lines = [line for line in stop.stderr.splitlines() if line.strip()]
    match = re.fullmatch(last_line, lines[-1])
    assert match, stop.stderr
    return match


def _audio(folder: Path, pattern: str) -> dict[Path, bytes]:
    return {path.relative_to(folder): path.read_bytes() for path in folder.glob(pattern)
            if not path.name.startswith(".")}


@pytest.mark.parametrize("dataset", ["mtat", "mtg-jamendo"])
def test_ctrl_c_while_generating_keeps_the_files_written_and_a_rerun_generates_the_rest(dataset, cache, tmp_path):
    if dataset == "mtat":
        home, data_args, pattern, total, unit = cache, MTAT_ARGS, "mp3/*/*.mp3", N_CLIPS, "clips"
        folder = home / synthetic_dir_name(N_CLIPS, CLIP_SAMPLES, 0)

        def generate(out: Path, n: int) -> Path:
            return generate_synthetic_mtat(out, n_clips=n, clip_samples=CLIP_SAMPLES, seed=0, workers=2,
                                           progress=False)
    else:
        home, data_args, pattern, total, unit = tmp_path / "cache", JAMENDO_ARGS, "[0-9][0-9]/*.mp3", N_TRACKS, "tracks"
        folder = home / synthetic_jamendo_dir_name(N_TRACKS, 0, 1, 2)

        def generate(out: Path, n: int) -> Path:
            return generate_synthetic_jamendo(out, n_tracks=n, seed=0, min_seconds=1, max_seconds=2, workers=2,
                                              progress=False)

    stop = interrupt(_command(home, tmp_path / "run", data_args), env=_env(),
                     began=lambda: len(_audio(folder, pattern)) >= 3)
    match = _stopped_cleanly(stop, rf"interrupted: generating the stand-in: (\d+) of {total} {unit} are written in "
                                   rf"{re.escape(str(folder))} \(kept\); rerun the same command to generate the rest")
    kept = {path: path.stat().st_mtime_ns for path in folder.glob(pattern) if not path.name.startswith(".")}
    assert int(match[1]) == len(kept) and 3 <= len(kept) < total

    generate(folder, total)  # what the rerun does first, with the command's arguments
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in kept.items()), "a kept file was written again"
    # Clip i depends on (seed, i) alone, so the first clips of a smaller MTAT stand-in are the same files.
    reference = generate(tmp_path / "reference", 8 if dataset == "mtat" else total)
    expected = _audio(reference, pattern)
    finished = _audio(folder, pattern)
    assert len(finished) == total and all(finished[path] == data for path, data in expected.items())


def test_ctrl_c_while_decoding_keeps_the_journal_and_a_rerun_continues(cache, tmp_path):
    folder = generate_synthetic_mtat(cache / synthetic_dir_name(N_CLIPS, CLIP_SAMPLES, 0), n_clips=N_CLIPS,
                                     clip_samples=CLIP_SAMPLES, seed=0, workers=2, progress=False)
    stores = cache / "waveforms"
    journals = lambda: list(stores.glob(f"*/{PARTIAL_DIR}/{JOURNAL_FILE}"))  # noqa: E731
    command = _command(cache, tmp_path / "run", MTAT_ARGS)
    # Each worker sleeps after every row (a test hook), so the 5 chunks of 32 rows take a few seconds.
    stop = interrupt(command, env=_env(**{ROW_DELAY_ENV: "0.02"}),
                     began=lambda: any(path.stat().st_size for path in journals()))
    (journal,) = journals()
    match = _stopped_cleanly(stop, rf"interrupted: decoding: (\d+) of {N_CLIPS} clips are in the store's journal at "
                                   rf"{re.escape(str(journal))} \(kept\); rerun the same command to continue decoding")
    journaled = {line.split("\t")[0] for line in journal.read_text().splitlines()}
    assert int(match[1]) == len(journaled) and 0 < len(journaled) < N_CLIPS
    assert not (journal.parent.parent / MANIFEST_FILE).exists()

    rerun = subprocess.run(command, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    annotations = read_annotations(folder / "annotations_final.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = prepare_cache(find_audio_root(folder), annotations.mp3_paths, annotations.clip_ids,
                                  tmp_path / "reference", CLIP_SAMPLES, workers=1, progress=False)
    store = journal.parent.parent
    for name in (WAVEFORMS_FILE, INDEX_FILE, MANIFEST_FILE):
        assert (store / name).read_bytes() == (reference / name).read_bytes(), name


_RAGGED_WRITER = textwrap.dedent("""
    import sys
    from datamodules.store.ragged import write_ragged_store
    from infrastructure.errors import Interrupted
    from tests.support.ragged_items import ITEMS, slow_decoder

    if __name__ == "__main__":
        try:
            write_ragged_store(sys.argv[1], ITEMS, decoder=slow_decoder, workers=2, commit_bytes=150_000)
        except Interrupted as stop:  # what run.py does with it
            print(f"interrupted: {stop.message}", file=sys.stderr)
            sys.exit(130)
""")


def test_ctrl_c_while_decoding_into_a_ragged_store_with_workers(tmp_path):
    script = tmp_path / "writer.py"  # a file: the spawned workers re-import it
    script.write_text(_RAGGED_WRITER)
    target = tmp_path / "store"
    journal = target / PARTIAL_DIR / JOURNAL_FILE
    stop = interrupt([sys.executable, str(script), str(target)], env=_env(),
                     began=lambda: journal.is_file() and journal.stat().st_size > 0)
    match = _stopped_cleanly(stop, rf"interrupted: decoding: (\d+) of {len(ITEMS)} tracks are in the store's journal "
                                   rf"at {re.escape(str(journal))} \(kept\); rerun the same command to continue "
                                   r"decoding")
    committed = len(journal.read_text().splitlines())
    assert int(match[1]) == committed and 0 < committed < len(ITEMS)
    decoded = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_ragged_store(target, ITEMS, decoder=recording_decoder(decoded), commit_bytes=150_000)  # the rerun, in this process
        write_ragged_store(tmp_path / "reference", ITEMS, decoder=generated_decoder, commit_bytes=150_000)
    assert decoded == [path for _, path in ITEMS[committed:]], "the rerun must continue after the journaled tracks"
    for name in (WAVEFORMS_FILE, INDEX_FILE, "offsets.npy", MANIFEST_FILE):
        assert (target / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
