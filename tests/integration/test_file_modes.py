"""Every file the suite writes follows the user's umask (files 0o666 & ~umask, folders 0o777 & ~umask).

On a shared cluster a colleague's `--compare` of your runs reads your figures, predictions and results; a file
written to a mkstemp name (always 0600) and renamed into place would lock them out. The fast test drives each
writer under two umasks in this process; the slow one runs the commands a user runs (generate data and its cache,
train with figures and checkpoints, evaluate, compare, tag with a taggram, sweep) in a process whose umask is 0o027,
then checks every file and folder they left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import optuna
import pytest
import torch

from experiments.reporting.compare import compare_runs
from experiments.reporting.figures import save_figure, tag_distribution_figure
from experiments.reporting.predictions import PREDICTIONS_FILE, read_predictions
from sweeps.report import write_report
from tagging.taggram import Taggram, write_taggram_png
from tests.support.fake_runs import TAGS, fake_run, scores
from tests.support.helpers import TINY_MEL_ARGS, tiny_data_args
from tests.support.modes import UMASKS, umask, wrong_modes
from tests.support.paths import REPO_ROOT


@pytest.mark.parametrize("mask", UMASKS)
def test_each_kind_of_report_file_gets_the_umasks_mode(tmp_path, mask):
    root = tmp_path / "root"
    with umask(mask):
        probs, targets = scores()
        a = fake_run(root / "a", probs, targets)  # config.json, test_predictions.npz, per_tag.csv, results.md, ...
        b = fake_run(root / "b", probs[::-1].copy(), targets, model="lstm_mel")
        compare_runs([a, b], root / "comparison", n_resamples=20, log_wandb=False)  # .md, .csv, per-tag .csv/.png
        save_figure(tag_distribution_figure(TAGS, np.arange(1, 6), 10), root / "figures" / "fig1.png")
        starts = np.arange(3) * 2.0
        taggram = Taggram(starts_s=starts, centres_s=starts + 1, probs=np.full((3, len(TAGS)), 0.5), window_s=2.0,
                          hop_s=2.0, padded=np.zeros(3), excerpt=(0.0, 6.0))
        write_taggram_png(taggram, TAGS, np.full(len(TAGS), 0.5), np.full(len(TAGS), 0.4), "song", root / "t.png")
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda trial: trial.suggest_float("lr", 0.001, 0.1, log=True), n_trials=3)
        write_report(study, root / "sweep")  # trials.csv/.md, best_params.json, history and importance plots
    names = {p.name for p in root.rglob("*") if p.is_file()}
    assert {PREDICTIONS_FILE, "per_tag.csv", "results.md", "metrics.json", "comparison.md", "comparison.csv",
            "per_tag_differences.csv", "per_tag_differences.png", "fig1.png", "t.png", "trials.md", "trials.csv",
            "best_params.json", "history.png"} <= names, names
    assert wrong_modes(root, mask) == []
    assert read_predictions(a / PREDICTIONS_FILE).n_clips == len(probs)  # written through a file object: readable


E2E = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    os.umask(0o027)
    sys.path.insert(0, {repo!r})
    import numpy as np, soundfile as sf
    import run
    base = Path({base!r})
    base.mkdir()
    data, mel = {data!r}, {mel!r}
    runs = base / "runs"
    train = ["--max-epochs", "1", "--limit-train-batches", "2", "--logger", "csv"]
    assert run.main(["--model", "mel_cnn", *data, *mel, *train, "--run-dir", str(runs / "a")]) == 0
    assert run.main(["--evaluate", str(runs / "a"), *data[data.index("--cache-dir"):data.index("--cache-dir") + 2],
                     "--no-progress", "--num-workers", "0", "--run-dir", str(runs / "a-evaluated")]) == 0
    song = base / "music" / "song.wav"
    song.parent.mkdir()
    sf.write(song, 0.3 * np.sin(np.arange(8 * 16000) / 16000 * 2 * np.pi * 440), 16000)
    assert run.main(["--tag", str(song), "--checkpoint", str(runs / "a"), "--taggram",
                     str(base / "taggrams" / "song.png"), "--accelerator", "cpu"]) == 0
    assert run.main(["--sweep", "lstm_mel", *data, "--n-mels", "16", "--trials", "1", "--max-epochs", "1",
                     "--limit-train-batches", "2", "--pruner", "none", "--logger", "csv", "--runs-root", str(runs),
                     "--sweep-space", '{{"hop_length": [1024], "n_fft": [512], "segments_per_clip": [1]}}']) == 0
    (trial,) = runs.glob("sweeps/*/trials/*")  # another model on the same test clips: a comparison with two rows
    assert run.main(["--compare", str(runs / "a"), str(runs / "a-evaluated"), str(trial), "--out",
                     str(base / "comparison"), "--bootstrap", "20"]) == 0
""")


@pytest.mark.slow
def test_every_file_of_data_runs_comparisons_taggrams_and_sweeps_follows_the_umask(tmp_path):
    base = tmp_path / "work"
    data = tiny_data_args(base / "cache", clips=48, figures=True)
    script = E2E.format(repo=str(REPO_ROOT), base=str(base), data=data, mel=TINY_MEL_ARGS["mel_cnn"])
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    files = [p.relative_to(base) for p in base.rglob("*") if p.is_file()]
    kinds = {
        "generated MP3": lambda p: p.suffix == ".mp3", "annotations": lambda p: p.name == "annotations_final.csv",
        "cache store": lambda p: "cache" in p.parts and p.suffix in (".npy", ".bin", ".json", ".csv", ".u8", ".i16"),
        "checkpoint": lambda p: p.suffix == ".ckpt", "run figure": lambda p: p.parent.name == "figures",
        "predictions": lambda p: p.name == PREDICTIONS_FILE, "per_tag.csv": lambda p: p.name == "per_tag.csv",
        "results.md": lambda p: p.name == "results.md", "config.yaml": lambda p: p.name == "config.yaml",
        "config.json": lambda p: p.name == "config.json", "history.csv": lambda p: p.name == "history.csv",
        "metrics.json": lambda p: p.name == "metrics.json", "comparison": lambda p: p.name == "comparison.md",
        "comparison figure": lambda p: p.name == "per_tag_differences.png", "taggram": lambda p: p.name == "song.png",
        "sweep report": lambda p: p.name == "trials.md", "sweep plot": lambda p: p.name == "history.png",
        "study database": lambda p: p.name == "study.db", "CSV logger": lambda p: p.name == "metrics.csv",
    }
    missing = [kind for kind, test in kinds.items() if not any(test(p) for p in files)]
    assert missing == [], sorted(str(p) for p in files)
    assert wrong_modes(base, 0o027) == []
    checkpoint = next(base.rglob("*.ckpt"))
    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert json.loads((base / "runs" / "a" / "metrics.json").read_text())["roc_auc"] is not None
