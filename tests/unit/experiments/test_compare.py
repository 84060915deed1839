"""--compare, ensembles, saved predictions and --reproduce.

Fast tests build run folders from constructed predictions (config.json, metrics.json and
test_predictions.npz as a run writes them); the slow ones train the paper's three models for
two epochs on a small generated dataset through `run.py --reproduce table4` and use those runs.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import run
from experiments.reporting.compare import compare_runs
from experiments.reporting.predictions import PREDICTIONS_FILE, read_predictions
from experiments.reproduce import TABLES, passthrough_args, plan_runs
from infrastructure.errors import DataError
from lightning_modules.metrics import tagging_metrics
from tests.support.fake_runs import TAGS, fake_run, scores
from tests.support.helpers import CHUNK_CLIP_SAMPLES, TEST_MEL_BACKEND


def test_a_run_compared_with_itself_has_difference_zero_and_p_one(tmp_path):
    probs, targets = scores()
    a = fake_run(tmp_path / "a", probs, targets)
    b = fake_run(tmp_path / "b", probs, targets, lr=0.05)  # another recipe, identical predictions
    result = compare_runs([a, b], tmp_path / "out", n_resamples=200, log_wandb=False)
    other = result.rows[1]
    for metric in ("roc_auc", "pr_auc"):
        assert (other[f"{metric}_diff"], other[f"{metric}_diff_low"], other[f"{metric}_diff_high"]) == (0, 0, 0)
        assert other[f"{metric}_diff_p"] == 1.0
    assert result.rows[0]["reference"] and "--lr" not in result.rows[0]["recipe"]
    assert other["recipe"] == "sgd lr 0.05"
    for name in ("comparison.md", "comparison.csv", "per_tag_differences.csv", "per_tag_differences.png"):
        assert (tmp_path / "out" / name).is_file()


def test_comparison_point_values_are_the_runs_reported_metrics_and_seeds_form_one_row(tmp_path):
    targets = scores()[1]
    runs = [fake_run(tmp_path / f"weak{s}", _noisy(targets, 0.4, s), targets,
                      seed=s) for s in range(3)]
    strong = fake_run(tmp_path / "strong", _noisy(targets, 2.0, 9), targets, model="lstm_mel")
    result = compare_runs([*runs, strong], tmp_path / "out", n_resamples=300, seed=1, log_wandb=False)
    weak, best = result.rows
    reported = [json.loads((r / "metrics.json").read_text()) for r in runs]
    assert weak["seeds"] == "0,1,2" and weak["label"] == "mel_cnn"
    assert weak["roc_auc"] == pytest.approx(np.mean([m["roc_auc"] for m in reported]), abs=1e-7)
    assert weak["roc_auc_std"] == pytest.approx(np.std([m["roc_auc"] for m in reported], ddof=1), abs=1e-7)
    assert weak["tpr"] == pytest.approx(np.mean([m["tpr"] for m in reported]), abs=1e-7)
    strong_metrics = json.loads((strong / "metrics.json").read_text())
    assert best["roc_auc"] == pytest.approx(strong_metrics["roc_auc"], abs=1e-7)
    assert best["roc_auc_diff"] == pytest.approx(strong_metrics["roc_auc"] - weak["roc_auc"], abs=1e-7)
    assert best["roc_auc_diff_low"] > 0 and best["roc_auc_diff_p"] < 0.01  # clearly better, on the same clips
    assert best["roc_auc_ci_low"] < best["roc_auc"] < best["roc_auc_ci_high"]
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "| mel_cnn (reference) |" in md and " ± " in md and "1,234" in md
    rows = list(csv.DictReader((tmp_path / "out" / "per_tag_differences.csv").open()))
    assert {r["model"] for r in rows} == {"lstm_mel"} and len(rows) == len(TAGS)
    assert all(float(r["difference"]) > 0 for r in rows)


def _noisy(targets, quality, seed):
    rng = np.random.default_rng(seed)
    z = quality * (2 * targets.astype(np.float64) - 1) + rng.normal(0, 1, targets.shape)
    return (1 / (1 + np.exp(-z))).astype(np.float32)


def test_reference_and_seeded_reruns(tmp_path):
    probs, targets = scores()
    a = fake_run(tmp_path / "a", probs, targets)
    b = fake_run(tmp_path / "b", _noisy(targets, 1.5, 3), targets, model="sample_cnn")
    first = compare_runs([a, b], tmp_path / "o1", reference=b, n_resamples=100, seed=5, log_wandb=False)
    compare_runs([a, b], tmp_path / "o2", reference=b, n_resamples=100, seed=5, log_wandb=False)
    assert first.reference == "sample_cnn" and [r["label"] for r in first.rows] == ["mel_cnn", "sample_cnn"]
    assert (tmp_path / "o1" / "comparison.csv").read_text() == (tmp_path / "o2" / "comparison.csv").read_text()


def test_runs_on_other_clips_or_tags_cannot_be_compared(tmp_path):
    probs, targets = scores()
    a = fake_run(tmp_path / "a", probs, targets)
    other_clips = fake_run(tmp_path / "b", probs, targets, clip_ids=np.arange(len(probs)) + 7)
    with pytest.raises(DataError, match="different clips") as error:
        compare_runs([a, other_clips], tmp_path / "out", log_wandb=False)
    assert str(a) in str(error.value) and str(other_clips) in str(error.value)
    other_tags = fake_run(tmp_path / "c", probs, targets, tags=[t.upper() for t in TAGS])
    with pytest.raises(DataError, match="tag lists differ"):
        compare_runs([a, other_tags], tmp_path / "out", log_wandb=False)
    assert not (tmp_path / "out").exists()


def test_the_comparison_says_when_its_test_set_cannot_separate_the_runs(tmp_path):
    """The rule of `separation_verdict`: no difference interval excludes 0, or a scored tag has fewer than
    MIN_TAG_POSITIVES positive clips, or the test set is too small to resample; else no sentence."""
    from experiments.reporting.compare import MIN_TAG_POSITIVES

    probs, targets = scores()
    assert (targets.sum(axis=0) >= MIN_TAG_POSITIVES).all()
    same = compare_runs([fake_run(tmp_path / "a", probs, targets), fake_run(tmp_path / "b", probs, targets, lr=0.05)],
                        tmp_path / "same", n_resamples=100, log_wandb=False)
    assert same.verdict == ("This test set (120 clips) cannot separate these runs: the 95% interval of every "
                            "difference to the reference contains 0 (or could not be given).")
    assert f"**{same.verdict}**" in (tmp_path / "same" / "comparison.md").read_text()
    strong = fake_run(tmp_path / "strong", _noisy(targets, 2.0, 9), targets, model="lstm_mel")
    apart = compare_runs([tmp_path / "a", strong], tmp_path / "apart", n_resamples=100, log_wandb=False)
    assert apart.verdict is None and "cannot separate" not in (tmp_path / "apart" / "comparison.md").read_text()

    rare = targets.copy()
    rare[:, 2] = 0
    rare[:3, 2] = 1  # piano: 3 positive test clips
    few = compare_runs([fake_run(tmp_path / "ra", probs, rare), fake_run(tmp_path / "rb", _noisy(rare, 2.0, 9), rare,
                                                                           model="lstm_mel")],
                       tmp_path / "few", n_resamples=100, log_wandb=False)
    assert few.rows[1]["roc_auc_diff_low"] > 0  # separated by the intervals, but on too few piano clips
    assert few.verdict == (f"This test set (120 clips) cannot separate these runs: 1 of its 5 scored tags have fewer "
                           f"than {MIN_TAG_POSITIVES} positive test clips (piano (3)), too few for resampling to "
                           "imitate another test set.")
    alone = compare_runs([tmp_path / "ra"], tmp_path / "alone", n_resamples=50, log_wandb=False)
    assert alone.verdict.startswith("This test set (120 clips) cannot give trustworthy intervals: 1 of its 5")


def test_a_test_set_too_small_to_resample_gives_no_interval_and_says_why(tmp_path, capsys):
    tags = [f"tag{i}" for i in range(8)]
    targets = np.zeros((20, len(tags)), dtype=np.uint8)
    targets[np.arange(len(tags)), np.arange(len(tags))] = 1  # one positive clip per tag: most resamples lose one
    rng = np.random.default_rng(0)
    a = fake_run(tmp_path / "a", rng.random(targets.shape).astype(np.float32), targets, tags=tags)
    b = fake_run(tmp_path / "b", rng.random(targets.shape).astype(np.float32), targets, tags=tags, model="lstm_mel")
    assert run.main(["--compare", str(a), str(b), "--out", str(tmp_path / "out"), "--bootstrap", "50"]) == 0
    md = (tmp_path / "out" / "comparison.md").read_text()
    (sentence,) = [line for line in md.splitlines() if "cannot separate" in line]
    assert sentence.startswith("**This test set cannot separate these runs: only ") and "too small" in sentence
    assert sentence.strip("*") in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    assert all(r["roc_auc_ci_low"] == "" and "too small" in r["roc_auc_ci_note"] for r in rows)
    assert rows[1]["roc_auc_diff"] != "" and rows[1]["roc_auc_diff_low"] == "" and rows[1]["roc_auc_diff_p"] == ""
    assert md.count("not given (1)") == 6  # two intervals per row, two differences: one shared reason
    (note,) = [line for line in md.splitlines() if line.startswith("(1) ")]
    assert "1 positive of 20" in note


def test_old_run_folders_without_predictions_are_named(tmp_path):
    probs, targets = scores()
    a = fake_run(tmp_path / "a", probs, targets)
    old1 = fake_run(tmp_path / "old1", probs, targets)
    old2 = fake_run(tmp_path / "old2", probs, targets)
    (old1 / PREDICTIONS_FILE).unlink()
    (old2 / PREDICTIONS_FILE).unlink()
    code = run.main(["--compare", str(a), str(old1), str(old2), "--out", str(tmp_path / "out")])
    assert code == 2
    with pytest.raises(DataError) as error:
        compare_runs([a, old1, old2], tmp_path / "out", log_wandb=False)
    assert f"{old1}, {old2}" in str(error.value) and "--evaluate" in str(error.value)


def test_compare_command_line(tmp_path, capsys):
    probs, targets = scores()
    a = fake_run(tmp_path / "a", probs, targets)
    b = fake_run(tmp_path / "b", _noisy(targets, 1.5, 3), targets, model="lstm_mel")
    code = run.main(["--compare", str(a), str(b), "--reference", str(b), "--out", str(tmp_path / "out"),
                     "--bootstrap", "50", "--bootstrap-seed", "3"])
    assert code == 0
    assert "comparison of 2 model(s) on 120 test clips" in capsys.readouterr().out
    assert "50 resamples, seed 3" in (tmp_path / "out" / "comparison.md").read_text()
    assert "| lstm_mel (reference) |" in (tmp_path / "out" / "comparison.md").read_text()


# ---- --reproduce planning ------------------------------------------------------------------
def _run_dir_of(argv):
    from experiments.run_folder import default_run_dir

    return default_run_dir(run.parse_options(argv))


def test_table4_plan_lists_the_papers_models_with_the_papers_settings(tmp_path, capsys):
    extra = ["--data", "synthetic", "--max-epochs", "2", "--runs-root", str(tmp_path)]
    planned = plan_runs("table4", [0, 1], passthrough_args(["--reproduce", "table4", "--seeds", "0,1", *extra]),
                        _run_dir_of)
    assert [(p.model, p.seed) for p in planned] == [("mel_cnn", 0), ("mel_cnn", 1), ("sample_cnn", 0),
                                                    ("sample_cnn", 1), ("lstm_mel", 0), ("lstm_mel", 1)]
    for p in planned:
        options = run.parse_options(list(p.argv))
        assert (options.tags, options.split, options.optimizer, options.lr) == ("paper", "folder", "sgd",
                                                                                            0.01)
        assert options.max_epochs == 2 and options.input_norm == (p.model == "lstm_mel")
        assert p.run_dir.parent == tmp_path.resolve() and p.status == "to train"
    assert len({p.run_dir for p in planned}) == 6
    assert run.main(["--reproduce", "table4", "--seeds", "0,1", *extra, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "table4: 6 runs" in out and out.count("python run.py --model") == 6
    assert not any(tmp_path.iterdir())  # a dry run trains nothing
    published = {r.model: r.published for r in TABLES["table4"].runs}
    assert published["mel_cnn"] == {"roc_auc": 0.894, "tpr": 0.827, "fpr": 0.173}


def test_won2020_needs_its_models(tmp_path, capsys):
    from lightning_modules.registry import MODELS

    models = [r.model for r in TABLES["won2020"].runs]
    assert set(models) == {"short_chunk_cnn", "short_chunk_resnet", "harmonic_cnn", "musicnn", "fcn", "crnn",
                           "sample_cnn_se", "tagging_transformer"}
    missing = [m for m in models if m not in MODELS]
    code = run.main(["--reproduce", "won2020", "--runs-root", str(tmp_path), "--dry-run"])
    err = capsys.readouterr().err
    if missing:
        assert code == 2 and err.count("\n") == 1 and ", ".join(missing) in err
    else:
        assert code == 0
    for model in models:
        spec = next(r for r in TABLES["won2020"].runs if r.model == model)
        assert set(spec.published) <= {"roc_auc", "pr_auc"}


def test_reproduce_refuses_protocol_options_and_unknown_tables(tmp_path, capsys):
    assert run.main(["--reproduce", "table4", "--tags", "standard", "--dry-run"]) == 2
    assert "--tags cannot be given with --reproduce" in capsys.readouterr().err
    assert run.main(["--reproduce", "table9", "--dry-run"]) == 2
    assert "unknown table" in capsys.readouterr().err
    assert run.main(["--reproduce", "table4", "--seeds", "0,x", "--dry-run"]) == 2
    assert run.main(["--reproduce", "table4", "--task-index", "3", "--runs-root", str(tmp_path)]) == 2
    assert "has runs 0 to 2" in capsys.readouterr().err


# ---- end to end: trained runs ---------------------------------------------------------------
# 5.25 s clips: the paper's mel_cnn hop (1792) needs at least 46 frames (82,432 samples).
E2E_DATA = ["--synthetic-clips", "120", "--synthetic-clip-samples", str(CHUNK_CLIP_SAMPLES), "--num-workers", "0",
            "--no-progress", "--no-figures", "--mel-backend", TEST_MEL_BACKEND, "--logger", "none"]
E2E_TRAIN = ["--max-epochs", "2", "--limit-train-batches", "2", "--batch-size", "4"]


@pytest.fixture(scope="module")
def table4(cache_dir, tmp_path_factory):
    """`--reproduce table4 --data synthetic --max-epochs 2` (tiny clips, two training batches per epoch)."""
    root = tmp_path_factory.mktemp("table4")
    argv = ["--reproduce", "table4", "--data", "synthetic", *E2E_DATA, *E2E_TRAIN, "--cache-dir", str(cache_dir),
            "--runs-root", str(root / "runs"), "--bootstrap", "200"]
    code = run.main(argv)
    assert code == 0
    planned = plan_runs("table4", [0], passthrough_args(argv), _run_dir_of)
    return root, argv, {p.model: p.run_dir for p in planned}


@pytest.mark.slow
def test_reproduce_table4_end_to_end(table4, capsys):
    root, argv, runs = table4
    md = (root / "runs" / "reproduce" / "table4" / "comparison.md").read_text()
    assert "Table 4 of Dalla Longa et al.: reproduced under the paper's protocol" in md
    assert "generated data, not MTAT" in md and "--input-norm" in md
    for model, paper in (("mel_cnn", "0.8940"), ("sample_cnn", "0.8800"), ("lstm_mel", "0.8700")):
        (line,) = [row for row in md.splitlines() if row.startswith(f"| {model}")]
        metrics = json.loads((runs[model] / "metrics.json").read_text())
        assert f"| {metrics['roc_auc']:.4f} |" in line and paper in line
    # rerunning reuses the finished runs and rewrites the same table
    capsys.readouterr()
    assert run.main(argv) == 0
    assert capsys.readouterr().err.count("already holds this finished run") == 3
    assert (root / "runs" / "reproduce" / "table4" / "comparison.md").read_text() == md


@pytest.mark.slow
def test_saved_predictions_give_the_reported_metrics(table4):
    _, _, runs = table4
    for run_dir in runs.values():
        predictions = read_predictions(run_dir / PREDICTIONS_FILE)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        report = tagging_metrics(torch.from_numpy(predictions.probs), torch.from_numpy(predictions.targets),
                                 predictions.tags, thresholds=torch.from_numpy(predictions.thresholds))
        assert (report.roc_auc, report.pr_auc, report.tpr, report.fpr) == (
            metrics["roc_auc"], metrics["pr_auc"], metrics["tpr"], metrics["fpr"])
        assert predictions.tags == metrics["test"]["tag_names"] and predictions.n_clips == metrics["test"]["n_clips"]
        assert predictions.split == "folder" and predictions.vocabulary == "paper"
        assert len(set(predictions.clip_ids.tolist())) == predictions.n_clips


@pytest.mark.slow
def test_evaluate_saves_predictions_and_ensembles(table4, cache_dir, tmp_path):
    _, _, runs = table4
    cache = ["--cache-dir", str(cache_dir), "--no-progress", "--num-workers", "0"]
    mel = runs["mel_cnn"]
    # one run: as before, plus its predictions, equal to the training run's
    assert run.main(["--evaluate", str(mel), *cache, "--run-dir", str(tmp_path / "single")]) == 0
    single, trained = read_predictions(tmp_path / "single" / PREDICTIONS_FILE), read_predictions(mel / PREDICTIONS_FILE)
    np.testing.assert_array_equal(single.probs, trained.probs)
    np.testing.assert_array_equal(single.clip_ids, trained.clip_ids)
    # an ensemble of a run with itself is the run
    assert run.main(["--evaluate", str(mel), str(mel), *cache, "--run-dir", str(tmp_path / "twice")]) == 0
    twice = json.loads((tmp_path / "twice" / "metrics.json").read_text())
    alone = json.loads((mel / "metrics.json").read_text())
    assert (twice["roc_auc"], twice["pr_auc"]) == (alone["roc_auc"], alone["pr_auc"])
    assert twice["tpr"] == pytest.approx(alone["tpr"]) and twice["fpr"] == pytest.approx(alone["fpr"])
    assert (tmp_path / "twice" / "results.md").is_file() and (tmp_path / "twice" / "per_tag.csv").is_file()
    # two architectures with their own frontends and segment layouts (Mel 1 segment, waveform, Mel 4 segments)
    members = [str(runs[m]) for m in ("mel_cnn", "sample_cnn", "lstm_mel")]
    assert run.main(["--evaluate", *members, *cache, "--run-dir", str(tmp_path / "three")]) == 0
    three = read_predictions(tmp_path / "three" / PREDICTIONS_FILE)
    mean = np.mean([read_predictions(Path(m) / PREDICTIONS_FILE).sorted_by_clip().probs.astype(np.float64)
                    for m in members], axis=0)
    np.testing.assert_allclose(three.sorted_by_clip().probs, mean, atol=1e-6)
    config = json.loads((tmp_path / "three" / "config.json").read_text())
    assert [m["model"] for m in config["ensemble"]] == ["mel_cnn", "sample_cnn", "lstm_mel"]
    # the ensemble folder compares like a run (same test clips)
    assert run.main(["--compare", *members, str(tmp_path / "three"), "--out", str(tmp_path / "cmp"),
                     "--bootstrap", "50"]) == 0
    assert "ensemble(mel_cnn + sample_cnn + lstm_mel)" in (tmp_path / "cmp" / "comparison.md").read_text()


@pytest.mark.slow
def test_ensemble_of_mismatched_runs_is_one_error_naming_both(table4, cache_dir, tmp_path, capsys):
    _, _, runs = table4
    other = tmp_path / "other-split"
    shutil.copytree(runs["sample_cnn"], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(dict(config, split="clean")))
    metrics = json.loads((other / "metrics.json").read_text())
    best = Path(metrics["best_checkpoint"])
    metrics["best_checkpoint"] = str(other / "checkpoints" / best.name)
    (other / "metrics.json").write_text(json.dumps(metrics))
    cache = ["--cache-dir", str(cache_dir), "--no-progress"]
    assert run.main(["--evaluate", str(runs["mel_cnn"]), str(other), *cache]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(runs["mel_cnn"]) in err and str(other) in err and "split" in err
    # another tag list: a checkpoint whose vocabulary differs
    saved = torch.load(other / "checkpoints" / best.name, map_location="cpu", weights_only=False)
    saved["hyper_parameters"]["tags"] = list(reversed(saved["hyper_parameters"]["tags"]))
    torch.save(saved, tmp_path / "other-tags.ckpt")
    assert run.main(["--evaluate", str(runs["mel_cnn"]), str(tmp_path / "other-tags.ckpt"), *cache]) == 2
    assert "tag lists differ" in capsys.readouterr().err


def test_wandb_table_only_when_online(tmp_path, monkeypatch):
    import wandb

    from experiments.reporting import loggers

    probs, targets = scores()
    a = fake_run(tmp_path / "a", probs, targets)
    b = fake_run(tmp_path / "b", _noisy(targets, 1.5, 3), targets, model="lstm_mel")
    logged = []

    class FakeRun:
        def log(self, data):
            logged.append(data)

        def finish(self):
            logged.append("finished")

    monkeypatch.setattr(wandb, "init", lambda **kwargs: logged.append(kwargs) or FakeRun())
    monkeypatch.setenv("WANDB_MODE", "offline")  # not logged in / offline: no W&B run at all
    compare_runs([a, b], tmp_path / "offline", n_resamples=20)
    assert logged == []
    monkeypatch.setattr(loggers, "choose_wandb_mode", lambda: loggers.WandbMode("online", "logged in"))
    compare_runs([a, b], tmp_path / "online", n_resamples=20)
    init, data, finished = logged
    assert init["job_type"] == "comparison" and finished == "finished"
    table = data["comparison"]
    assert table.columns[:2] == ["label", "model"] and [row[0] for row in table.data] == ["mel_cnn", "lstm_mel"]


def test_distilled_runs_form_one_row_per_set_of_teachers_by_their_weights_and_name_them(tmp_path):
    targets = scores()[1]

    def distilled(name: str, seed: int, given: str, identity: str) -> Path:
        folder = fake_run(tmp_path / name, _noisy(targets, 1.0, seed), targets, seed=seed, teacher=[given],
                          teacher_identity=[identity])
        config = json.loads((folder / "config.json").read_text())
        config["resolved"]["teachers"] = [{"given": given, "identity": identity}]
        (folder / "config.json").write_text(json.dumps(config))
        return folder

    plain = fake_run(tmp_path / "plain", _noisy(targets, 1.0, 5), targets, seed=5)
    runs = [distilled("d0", 0, "/runs/teacher-a", "aaaa"), distilled("d1", 1, "/moved/teacher-a", "aaaa"),
            distilled("d2", 2, "/runs/teacher-b", "bbbb")]
    result = compare_runs([plain, *runs], tmp_path / "out", n_resamples=100, seed=1, log_wandb=False)
    # the same teacher moved elsewhere is the same teacher; another teacher's student is another model
    assert [row["seeds"] for row in result.rows] == ["5", "0,1", "2"]
    assert [row["recipe"] for row in result.rows] == ["sgd lr 0.01", "sgd lr 0.01, --teacher teacher-a",
                                                     "sgd lr 0.01, --teacher teacher-b"]
