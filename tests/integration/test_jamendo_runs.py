"""MTG-Jamendo through the suite's other paths: sweeps, DDP-exact evaluation, W&B, thresholds and figures,
--compare and --reproduce, on the generated stand-in (`--dataset mtg-jamendo --data synthetic`, the 24
tracks of 4-8 s of tests/unit/datamodules/datasets/jamendo/test_datamodule.py).

The stand-in's split 0 has 7 test tracks: odd, so two DDP ranks get uneven shares, and with 3
evaluation chunks per track (21 chunks, batches of 4) the last batches are partial. The trained
runs are tiny (one epoch of two batches, small networks) and shared between tests through
module fixtures: the W&B run is one side of the comparison, the reproduced table's first run
the other.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import run
from experiments.reporting import loggers
from experiments.reproduce import TABLES, passthrough_args, plan_runs
from tests.support.fake_runs import fake_run, scores
from tests.support.helpers import JAMENDO_STAND_IN_ARGS, TINY_MEL_ARGS, one_torch_thread, read_metrics
from tests.support.paths import REPO_ROOT
from tests.support.wandb_records import read_offline_run, values

TINY_TRAIN = ["--max-epochs", "1", "--limit-train-batches", "2", "--batch-size", "4"]
EVAL_BATCH = 4
CHUNKS = 3  # evaluation chunks per track in the DDP run (mel_cnn at hop 256: 77 frames each)
# The three models of won2020-jamendo, small (width 8) and with 2 evaluation chunks per track.
TABLE_ARGS = ["--width", "8", "--segments-per-clip", "2", *TINY_TRAIN, "--eval-batch-size", "64"]


def _finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _one_line_error(capsys, argv, *expected: str) -> str:
    assert run.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(e in err for e in expected), err
    return err


def _stand_in(cache: Path, dataset: bool = True, figures: bool = False) -> list[str]:
    """JAMENDO_STAND_IN_ARGS in `cache`, the session's cache folder (its tracks and store are generated and decoded
    once for the session; tests/unit/datamodules/datasets/jamendo/test_datamodule.py's end-to-end runs read the same);
    without `--dataset mtg-jamendo` for --reproduce won2020-jamendo, whose protocol sets it; with `figures`, without
    JAMENDO_STAND_IN_ARGS's --no-figures."""
    left_out = ({"--dataset", "mtg-jamendo"} if not dataset else set()) | ({"--no-figures"} if figures else set())
    return [a for a in [*JAMENDO_STAND_IN_ARGS, "--cache-dir", str(cache)] if a not in left_out]


@pytest.fixture
def one_thread():
    """Train in this process on one thread (the 2 shared cores: two busy threads stall each other)."""
    with one_torch_thread():
        yield


# ---------------------------------------------------------------- a sweep
@pytest.mark.slow
def test_a_sweep_on_mtg_jamendo_completes_with_its_report(cache_dir, tmp_path, one_thread, capsys):
    argv = ["--sweep", "mel_cnn", *_stand_in(cache_dir), "--n-fft", "1024", *TINY_MEL_ARGS["mel_cnn"], *TINY_TRAIN,
            "--trials", "2", "--pruner", "none", "--study-name", "jam", "--runs-root", str(tmp_path)]
    assert run.main(argv) == 0, capsys.readouterr().err
    folder = tmp_path / "sweeps" / "jam"
    for name in ("trials.md", "trials.csv", "best_params.json", "history.png", "intermediate.png"):
        assert (folder / name).is_file(), name
    report = json.loads((folder / "best_params.json").read_text())
    assert report["counts"] == {"COMPLETE": 2} and _finite(report["best"]["value"])
    assert _finite(report["best"]["test_roc_auc"])
    assert set(report["best"]["params"]) == {"dropout", "lr", "global_decay"}  # the options given stay fixed
    trials = sorted((folder / "trials").iterdir())
    assert [t.name for t in trials] == ["trial-0000", "trial-0001"]
    for trial in trials:
        config = json.loads((trial / "config.json").read_text())
        assert config["dataset"] == "mtg-jamendo" and config["resolved"]["tags"][0].startswith("genre---")
        metrics = read_metrics(trial)
        assert all(_finite(metrics[k]) for k in ("roc_auc", "pr_auc", "tpr", "fpr"))
        assert metrics["test"]["n_clips"] == 7
        assert _finite(json.loads((trial / "sweep_trial.json").read_text())["value"])
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"] and all(_finite(float(r["value"])) for r in rows)
    assert (folder / "best" / "metrics.json").is_file()


# ---------------------------------------------------------------- DDP-exact evaluation
@pytest.fixture(scope="module")
def ddp_run(cache_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("jamendo-ddp") / "run"
    command = [sys.executable, str(REPO_ROOT / "run.py"), "--model", "mel_cnn", *_stand_in(cache_dir),
               "--hop-length", "256", "--n-mels", "96", "--segments-per-clip", str(CHUNKS), "--accelerator", "cpu", "--devices",
               "2", "--strategy", "ddp", *TINY_TRAIN, "--eval-batch-size", str(EVAL_BATCH), "--run-dir", str(run_dir)]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return run_dir


@pytest.mark.slow
def test_ddp_test_metrics_on_tracks_equal_a_single_process_evaluation(ddp_run, tmp_path):
    trained = read_metrics(ddp_run)
    n_tracks = trained["test"]["n_clips"]
    assert n_tracks == 7 and (n_tracks * CHUNKS) % (2 * EVAL_BATCH) != 0  # uneven ranks, partial last batches
    assert json.loads((ddp_run / "config.json").read_text())["resolved"]["layout"]["segments_per_clip"] == CHUNKS
    eval_dir = tmp_path / "evaluation"
    assert run.main(["--evaluate", str(ddp_run), "--accelerator", "cpu", "--devices", "1", "--num-workers", "0",
                     "--no-progress", "--run-dir", str(eval_dir)]) == 0
    single = read_metrics(eval_dir)
    assert single["test"]["n_clips"] == n_tracks and single["best_checkpoint"] == trained["best_checkpoint"]
    for key in ("roc_auc", "pr_auc", "tpr", "fpr"):
        assert single[key] == pytest.approx(trained[key], abs=1e-6), key
    for key in ("per_tag_roc_auc", "per_tag_pr_auc"):
        a, b = trained["test"][key], single["test"][key]
        assert [x is None for x in a] == [x is None for x in b], key
        assert [x for x in a if x is not None] == pytest.approx([x for x in b if x is not None], abs=1e-6), key
    assert single["thresholds"] == trained["thresholds"]
    # the saved predictions of both: every test track once, the same probabilities
    from experiments.reporting.predictions import PREDICTIONS_FILE, read_predictions

    a = read_predictions(ddp_run / PREDICTIONS_FILE).sorted_by_clip()
    b = read_predictions(eval_dir / PREDICTIONS_FILE).sorted_by_clip()
    assert len(set(a.clip_ids.tolist())) == n_tracks and np.array_equal(a.clip_ids, b.clip_ids)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)


# ---------------------------------------------------------------- W&B, thresholds, figures
@pytest.fixture(scope="module")
def wandb_run(cache_dir, tmp_path_factory) -> Path:
    """A mel_cnn run logged to W&B offline (no credentials, W&B's folders in tmp)."""
    home = tmp_path_factory.mktemp("jamendo-wandb")
    run_dir = home / "run"
    saved = dict(os.environ)
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY"):
        os.environ.pop(name, None)
    os.environ.update(WANDB_MODE="offline", NETRC=str(home / "no-netrc"), WANDB_CONFIG_DIR=str(home / "config"),
                      WANDB_CACHE_DIR=str(home / "cache"), WANDB_DATA_DIR=str(home / "data"))
    try:
        code = run.main(["--model", "mel_cnn", *_stand_in(cache_dir, figures=True), *TINY_MEL_ARGS["mel_cnn"], *TINY_TRAIN,
                         "--logger", "wandb", "--log-every-n-steps", "1", "--run-dir", str(run_dir)])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert code == 0
    return run_dir


@pytest.mark.slow
def test_wandb_logs_the_test_metrics_thresholds_and_figures_of_a_jamendo_run(wandb_run):
    metrics = read_metrics(wandb_run)
    tags = metrics["test"]["tag_names"]
    assert tags[0].startswith("genre---") and any(t.startswith("mood/theme---") for t in tags)
    run_id = (wandb_run / loggers.RUN_ID_FILE).read_text().strip()
    (folder,) = loggers.offline_run_dirs(wandb_run, run_id)
    logged = read_offline_run(folder)
    history, config = logged["history"], logged["config"]
    assert config["dataset"] == "mtg-jamendo" and config["resolved"]["tags"] == tags
    assert values(history, "test/roc_auc") == pytest.approx([metrics["roc_auc"]])
    assert values(history, "test/pr_auc") == pytest.approx([metrics["pr_auc"]])
    (entry,) = values(history, "test/per_tag")
    table = json.loads((folder / "files" / entry["path"]).read_text())
    column = table["columns"].index("threshold")
    assert [row[0] for row in table["data"]] == tags
    assert [row[column] for row in table["data"]] == pytest.approx(metrics["thresholds"])
    for name in ("tag_distribution", "loss", "threshold", "roc", "mel_example"):
        (image,) = values(history, f"figures/{name}")
        assert (folder / "files" / image["filenames"][0]).is_file(), name


@pytest.mark.slow
def test_a_jamendo_run_folder_has_per_tag_thresholds_and_the_figures(wandb_run):
    metrics = read_metrics(wandb_run)
    rows = list(csv.DictReader((wandb_run / "per_tag.csv").open()))
    assert [r["tag"] for r in rows] == metrics["test"]["tag_names"]
    thresholds = [float(r["threshold"]) for r in rows]
    assert all(0.0 <= t <= 1.0 for t in thresholds) and thresholds == pytest.approx(metrics["thresholds"], abs=1e-6)
    assert all(int(r["positives"]) >= 0 for r in rows)
    figures = wandb_run / "figures"
    for name in ("fig1_tag_distribution.png", "fig2_loss.png", "roc_best_worst.png", "mel_example.png"):
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    (threshold_figure,) = figures.glob("fig3_threshold_*.png")
    names = {t.replace(" ", "_").replace("/", "_") for t in metrics["test"]["tag_names"]}
    assert threshold_figure.stem.removeprefix("fig3_threshold_") in names
    assert (wandb_run / "history.csv").is_file()


# ---------------------------------------------------------------- --reproduce won2020-jamendo
def test_won2020_jamendo_plans_its_three_models_under_the_protocol(cache_dir, tmp_path, capsys):
    spec = TABLES["won2020-jamendo"]
    assert [r.model for r in spec.runs] == ["short_chunk_cnn", "harmonic_cnn", "short_chunk_resnet"]
    assert [r.published for r in spec.runs] == [{"roc_auc": 0.8324, "pr_auc": 0.2976}, {}, {}]
    argv = ["--reproduce", "won2020-jamendo", *_stand_in(cache_dir, dataset=False), *TABLE_ARGS, "--runs-root",
            str(tmp_path)]
    assert run.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "won2020-jamendo: 3 runs" in out and out.count("python run.py --model") == 3
    assert out.count("--dataset mtg-jamendo --jamendo-split 0 --jamendo-subset top50tags") == 3
    assert not any(tmp_path.iterdir())  # a dry run trains nothing
    from experiments.run_folder import default_run_dir

    planned = plan_runs("won2020-jamendo", [0], passthrough_args(argv), lambda a: default_run_dir(run.parse_options(a)))
    for p in planned:
        options = run.parse_options(list(p.argv))
        assert (options.dataset, options.jamendo_split, options.jamendo_subset) == ("mtg-jamendo", 0, "top50tags")
        assert p.run_dir.parent == tmp_path.resolve() and f"{p.run_dir}" in out
    # the MTAT tables plan what they always did
    mtat = plan_runs("won2020", [0], passthrough_args(["--reproduce", "won2020"]), lambda a: Path("/x"))
    assert mtat[0].argv == ("--model", "short_chunk_cnn", "--tags", "standard", "--split", "clean", "--seed", "0")
    table4 = plan_runs("table4", [1], passthrough_args(["--reproduce", "table4"]), lambda a: Path("/x"))
    assert table4[2].argv == ("--model", "lstm_mel", "--tags", "paper", "--split", "folder", "--input-norm",
                              "--seed", "1")


def test_reproduce_refuses_the_protocols_own_options_with_one_line(tmp_path, capsys):
    root = ["--runs-root", str(tmp_path), "--dry-run"]
    _one_line_error(capsys, ["--reproduce", "won2020", "--dataset", "mtg-jamendo", *root],
                    "--dataset cannot be given with --reproduce won2020")
    _one_line_error(capsys, ["--reproduce", "table4", "--dataset=mtg-jamendo", *root], "--dataset cannot be given")
    for option, value in (("--jamendo-split", "1"), ("--jamendo-subset", "genre"), ("--dataset", "mtat"),
                          ("--tags", "standard"), ("--model", "fcn")):
        _one_line_error(capsys, ["--reproduce", "won2020-jamendo", option, value, *root],
                        f"{option} cannot be given with --reproduce won2020-jamendo", "--jamendo-subset top50tags")
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def table_runs(cache_dir, tmp_path_factory):
    """--reproduce won2020-jamendo on the stand-in: first --task-index 0 alone, then the whole table."""
    root = tmp_path_factory.mktemp("jamendo-reproduce")
    argv = ["--reproduce", "won2020-jamendo", *_stand_in(cache_dir, dataset=False), *TABLE_ARGS, "--runs-root",
            str(root / "runs"), "--bootstrap", "100"]
    from experiments.run_folder import default_run_dir

    planned = plan_runs("won2020-jamendo", [0], passthrough_args(argv), lambda a: default_run_dir(run.parse_options(a)))
    assert run.main([*argv, "--task-index", "0"]) == 0
    statuses = [p.status for p in planned]
    assert run.main(argv) == 0
    return root, planned, statuses


@pytest.mark.slow
def test_reproduce_won2020_jamendo_trains_a_task_then_the_table(table_runs, capsys):
    root, planned, statuses = table_runs
    assert statuses == ["finished", "to train", "to train"]  # --task-index 0 trained run 0 only
    md = (root / "runs" / "reproduce" / "won2020-jamendo" / "comparison.md").read_text()
    assert "MTG-Jamendo: reproduced under the literature's MTG-Jamendo protocol" in md
    assert "generated data, not MTG-Jamendo" in md and "generated MTG-Jamendo (24 tracks" in md
    for p in planned:
        metrics = read_metrics(p.run_dir)
        (line,) = [row for row in md.splitlines() if row.startswith(f"| {p.model}")]
        assert f"| {metrics['roc_auc']:.4f} |" in line
        assert json.loads((p.run_dir / "config.json").read_text())["dataset"] == "mtg-jamendo"
    (cnn,) = [row for row in md.splitlines() if row.startswith("| short_chunk_cnn")]
    assert cnn.endswith("| 0.8324 | 0.2976 | n/a | n/a |")
    (resnet,) = [row for row in md.splitlines() if row.startswith("| short_chunk_resnet")]
    assert resnet.endswith("| n/a | n/a | n/a | n/a |")


# ---------------------------------------------------------------- --compare
@pytest.mark.slow
def test_compare_two_jamendo_runs_and_refuse_an_mtat_run(wandb_run, table_runs, tmp_path, capsys):
    _, planned, _ = table_runs
    other = planned[0].run_dir  # short_chunk_cnn, the same 7 test tracks
    out = tmp_path / "cmp"
    assert run.main(["--compare", str(wandb_run), str(other), "--out", str(out), "--bootstrap", "200"]) == 0
    assert "comparison of 2 model(s) on 7 test clips" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["model"] for r in rows] == ["mel_cnn", "short_chunk_cnn"]
    for row in rows:
        assert row["data"].startswith("generated MTG-Jamendo (24 tracks") and row["test_clips"] == "7"
        assert _finite(float(row["roc_auc"]))
        for metric in ("roc_auc", "pr_auc"):  # on 7 test tracks an interval may be refused, saying why
            if row[f"{metric}_ci_note"]:
                assert row[f"{metric}_ci_low"] == row[f"{metric}_ci_high"] == ""
            else:
                low, high = float(row[f"{metric}_ci_low"]), float(row[f"{metric}_ci_high"])
                assert 0.0 <= low <= float(row[metric]) <= high <= 1.0
    if not rows[1]["roc_auc_diff_note"]:
        assert float(rows[1]["roc_auc_diff_low"]) <= float(rows[1]["roc_auc_diff"]) <= float(rows[1]["roc_auc_diff_high"])
    assert float(rows[1]["roc_auc_diff"]) == pytest.approx(float(rows[1]["roc_auc"]) - float(rows[0]["roc_auc"]),
                                                           abs=1e-6)
    md = (out / "comparison.md").read_text()
    assert "95% CI" in md and (out / "per_tag_differences.csv").is_file()
    assert "cannot separate these runs" in md  # 7 test tracks: every tag has fewer than 10 positive ones

    probs, targets = scores(n_clips=7)
    mtat = fake_run(tmp_path / "mtat-run", probs, targets)
    refused = tmp_path / "refused"
    for pair in ((wandb_run, mtat), (mtat, wandb_run)):
        _one_line_error(capsys, ["--compare", *map(str, pair), "--out", str(refused)], "cannot be compared",
                        "MTG-Jamendo", "MTAT", str(mtat))
    assert not refused.exists()
