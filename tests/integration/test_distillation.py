"""Distillation and self-training end to end (`--teacher`, `--unlabeled`, `--rounds`): bad input, exact resume of a
killed chain of rounds, 2-process DDP, a sweep over the mixing weight, the `--reproduce distillation` table.

The teacher is the session's one-epoch mel_cnn run (`mel_cnn_run`, tests/conftest.py) on the tiny generated data;
the unlabelled pool is a folder of links to MP3s of that data (tags left behind) beside a broken and an empty file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import run
from datamodules.datasets.mtat.standin import synthetic_dir_name
from experiments.options import RunOptions
from experiments.run_folder import config_digest
from experiments.teachers import read_teacher
from lightning_modules.tagging_module import TaggingModule
from tests.support.helpers import TINY_CLIP_SAMPLES, TINY_MEL_ARGS, TRAINED_LSTM_ARGS, read_metrics
from tests.support.paths import REPO_ROOT

MEL = TINY_MEL_ARGS["mel_cnn"]


def student_args(tiny_cache, *extra: str, model: str = "mel_cnn") -> list[str]:
    return ["--model", model, *tiny_cache.args(), *(MEL if model == "mel_cnn" else ()), "--logger", "none", *extra]


@pytest.fixture(scope="module")
def pool(mel_cnn_run, cache_dir, tmp_path_factory) -> Path:
    """Twelve MP3s of the tiny data (links, no annotations), a garbage .mp3 and a zero-byte .wav."""
    folder = tmp_path_factory.mktemp("unlabelled") / "pool"
    (folder / "album").mkdir(parents=True)
    mp3s = sorted((cache_dir / synthetic_dir_name(120, TINY_CLIP_SAMPLES, 0) / "mp3").glob("*/*.mp3"))[:12]
    for i, mp3 in enumerate(mp3s):
        (folder / "album" / f"track{i:02d}.mp3").symlink_to(mp3)
    (folder / "broken.mp3").write_bytes(b"no audio in here" * 64)
    (folder / "empty.wav").write_bytes(b"")
    return folder


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def _fail(argv: list[str], capsys) -> str:
    capsys.readouterr()
    code = run.main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-3000:]
    return errors[0]


def _bare_checkpoint(run_dir: Path, target: Path, **hparams) -> Path:
    """The run's best checkpoint alone (no run folder around it), its hyperparameters changed."""
    saved = torch.load(read_metrics(run_dir)["best_checkpoint"], map_location="cpu", weights_only=False)
    saved["hyper_parameters"].update(hparams)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(saved, target)
    return target


def test_bad_teachers_and_pools_are_one_line_before_any_data_work(mel_cnn_run, pool, tiny_cache, tmp_path, capsys):
    teacher = str(mel_cnn_run)
    before = _listing(tiny_cache.cache_dir)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(mel_cnn_run / "config.json", unfinished / "config.json")
    other_rate = _bare_checkpoint(mel_cnn_run, tmp_path / "bare" / "rate.ckpt", sample_rate=22_050)
    cases = [
        (["--teacher", str(tmp_path / "nowhere")], "nowhere: checkpoint not found"),
        (["--teacher", str(unfinished)], "this run has not finished (no metrics.json)"),
        (["--teacher", teacher, "--n-tags", "10"], "predicts another tag list (--n-tags 50 vs 10)"),
        (["--teacher", teacher, "--synthetic-clips", "64"], "another dataset or split (--synthetic-clips 120 vs 64)"),
        (["--teacher", str(other_rate)], "was trained on audio at 22050 Hz"),
        (["--teacher", teacher, "--run-dir", teacher], "cannot be its own teacher"),
        (["--teacher", teacher, str(mel_cnn_run / "checkpoints" / Path(read_metrics(mel_cnn_run)["best_checkpoint"]).name)],
         "lists one model twice"),
        (["--distill-weight", "0.5"], "--distill-weight applies to --teacher"),
        (["--unlabeled", str(pool)], "--unlabeled needs --teacher"),
        (["--teacher", teacher, "--unlabeled", str(tmp_path / "no-pool")], "no-pool: no such folder"),
        (["--teacher", teacher, "--unlabeled-ratio", "2"], "--unlabeled-ratio applies to --unlabeled"),
        (["--teacher", teacher, "--rounds", "2", "--accelerator", "cpu", "--devices", "2"],
         "--rounds runs its rounds one after another in one process"),
    ]
    for extra, expected in cases:
        line = _fail([*student_args(tiny_cache, "--run-dir", str(tmp_path / "run")), *extra], capsys)
        assert expected in line, (extra, line)
        assert not (tmp_path / "run").exists(), extra
    # a teacher reading longer segments than the student's crop: lstm_mel's 4 segments per clip are shorter
    line = _fail([*student_args(tiny_cache, *TRAINED_LSTM_ARGS, "--teacher", teacher, model="lstm_mel")], capsys)
    assert "reads 58880-sample segments, longer than the student's 14336-sample crops" in line
    assert _listing(tiny_cache.cache_dir) == before  # nothing decoded, generated or written


def test_a_checkpoint_file_alone_is_checked_against_the_prepared_data(mel_cnn_run, tiny_cache, tmp_path, capsys):
    tags = [f"other{i}" for i in range(50)]
    bare = _bare_checkpoint(mel_cnn_run, tmp_path / "bare" / "tags.ckpt", tags=tags)
    line = _fail([*student_args(tiny_cache, "--teacher", str(bare), "--run-dir", str(tmp_path / "run"))], capsys)
    assert "predicts 50 tags (other0, other1, other2, ...), the data give the student" in line
    assert not (tmp_path / "run").exists()


def test_teachers_are_identified_by_their_weights_not_their_paths(mel_cnn_run, tiny_cache, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(mel_cnn_run, moved)
    metrics = read_metrics(moved)
    metrics["best_checkpoint"] = str(moved / "checkpoints" / Path(metrics["best_checkpoint"]).name)
    (moved / "metrics.json").write_text(json.dumps(metrics))
    digest = lambda teacher: config_digest(run.parse_options(student_args(tiny_cache, "--teacher", str(teacher))))  # noqa: E731
    assert digest(moved) == digest(mel_cnn_run) != config_digest(run.parse_options(student_args(tiny_cache)))
    saved = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=False)
    key = next(k for k in saved["state_dict"] if k.startswith("network."))
    saved["state_dict"][key] = saved["state_dict"][key] + 1e-3  # retrained in place: another teacher
    torch.save(saved, metrics["best_checkpoint"])
    assert digest(moved) != digest(mel_cnn_run)
    assert read_teacher(moved).identity != read_teacher(mel_cnn_run).identity


def test_the_distillation_table_plans_teachers_their_ensemble_the_student_and_the_distilled_student(tmp_path, capsys):
    argv = ["--reproduce", "distillation", "--seeds", "0,1", "--data", str(tmp_path / "mtat"), "--runs-root",
            str(tmp_path / "runs")]
    assert run.main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split(":")[0] for line in lines] == [
        "[0] short_chunk_resnet (teacher) seed 0", "[1] short_chunk_resnet (teacher) seed 1",
        "[2] musicnn (teacher) seed 0", "[3] musicnn (teacher) seed 1", "[4] ensemble (teachers' ensemble)",
        "[5] short_chunk_cnn (student) seed 0", "[6] short_chunk_cnn (student) seed 1",
        "[7] short_chunk_cnn (distilled student) seed 0", "[8] short_chunk_cnn (distilled student) seed 1"]
    assert "waits for run(s) 0, 1, 2, 3" in lines[7] and "to evaluate" in lines[4]
    commands = [line.strip() for line in out.splitlines() if line.startswith("    python run.py")]
    assert all("--tags standard --split clean" in c for c in commands if "--model" in c)
    assert commands[4].startswith("python run.py --evaluate ") and commands[7].count(str(tmp_path / "runs")) >= 4
    assert not (tmp_path / "runs").exists()
    assert run.main([*argv, "--task-index", "7"]) == 2
    assert "needs run(s) 0, 1, 2, 3 finished first" in capsys.readouterr().err


# ---- training (slow) ----------------------------------------------------------------------------------------------
CHAIN = ["--max-epochs", "2", "--limit-train-batches", "4", "--recipe", "modern", "--warmup", "0.2", "--ema-decay",
         "0.9", "--seed", "3", "--rounds", "2"]
"""Two rounds of self-training with the modern recipe's noise (mixup, SpecAugment, EMA, cosine, clipping)."""


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYTHONHASHSEED")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _run(arguments: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as stream:
        return subprocess.Popen([sys.executable, *arguments], cwd=REPO_ROOT, env=_env(), stdout=stream,
                                stderr=subprocess.STDOUT)


def _chain_args(cache_dir: Path, teacher: Path, pool: Path, run_dir: Path) -> list[str]:
    data = ["--data", "synthetic", "--synthetic-clips", "120", "--synthetic-clip-samples", str(TINY_CLIP_SAMPLES),
            "--cache-dir", str(cache_dir), "--no-progress", "--no-figures", "--mel-backend", "torchaudio"]
    return ["--model", "mel_cnn", *data, *MEL, "--logger", "csv", "--teacher", str(teacher), "--unlabeled", str(pool),
            *CHAIN, "--run-dir", str(run_dir)]  # the default loader workers, as a user runs it


@pytest.mark.slow
def test_a_killed_chain_of_self_training_rounds_resumes_to_the_uninterrupted_result(mel_cnn_run, pool, cache_dir,
                                                                                    tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = _run(["run.py", *_chain_args(cache_dir, mel_cnn_run, pool, whole)], tmp_path / "whole.log")
    # SIGKILLed in round 2, in its second epoch (epoch 0's checkpoint is on disk)
    kill = _run(["-m", "tests.support.kill_during", "train:2", "1", "1",
                 *_chain_args(cache_dir, mel_cnn_run, pool, killed)], tmp_path / "kill.log")
    assert kill.wait(timeout=600) == -signal.SIGKILL, (tmp_path / "kill.log").read_text()[-3000:]
    assert (killed / "round-1" / "metrics.json").is_file() and not (killed / "round-2" / "metrics.json").exists()
    assert (killed / "round-2" / "checkpoints" / "last.ckpt").is_file()
    rerun = _run(["run.py", *_chain_args(cache_dir, mel_cnn_run, pool, killed)], tmp_path / "rerun.log")
    assert rerun.wait(timeout=600) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "whole.log").read_text()[-3000:]
    log = (tmp_path / "rerun.log").read_text()
    assert f"{killed / 'round-1'} already holds this finished run" in log
    assert f"resuming {killed / 'round-2'} from checkpoints/last.ckpt" in log
    assert "unlabeled audio" in log and "12 of 14 file(s) decoded" in log and "2 error(s) listed in" in log
    for round_ in ("round-1", "round-2"):
        expected, got = read_metrics(whole / round_), read_metrics(killed / round_)
        assert got["test"] == expected["test"] and got["thresholds"] == expected["thresholds"], round_
        assert (killed / round_ / "history.csv").read_text() == (whole / round_ / "history.csv").read_text()
    # round 2 learned from round 1's student, identified by its weights; its checkpoint is the student alone
    config = json.loads((killed / "round-2" / "config.json").read_text())
    assert config["teacher"] == [str(killed / "round-1")] and RunOptions.from_dict(config).rounds == 1
    assert config["teacher_identity"] == [read_teacher(killed / "round-1").identity]
    student = TaggingModule.from_checkpoint(read_metrics(killed / "round-2")["best_checkpoint"])
    assert student.teacher is None and not [k for k in student.state_dict() if "teacher" in k]


@pytest.mark.slow
def test_a_killed_distillation_with_fixed_crops_resumes_to_the_uninterrupted_result(mel_cnn_run, cache_dir, tmp_path):
    """mel_cnn reads the whole tiny clip: fixed crops, which the teachers label once when training starts."""
    def args(run_dir: Path) -> list[str]:
        data = ["--data", "synthetic", "--synthetic-clips", "120", "--synthetic-clip-samples", str(TINY_CLIP_SAMPLES),
                "--cache-dir", str(cache_dir), "--no-progress", "--no-figures", "--mel-backend", "torchaudio"]
        return ["--model", "mel_cnn", *data, *MEL, "--logger", "csv", "--teacher", str(mel_cnn_run), "--max-epochs",
                "2", "--limit-train-batches", "4", "--distill-weight", "0.5", "--seed", "4", "--run-dir", str(run_dir)]

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = _run(["run.py", *args(whole)], tmp_path / "whole.log")
    kill = _run(["-m", "tests.support.kill_during", "train", "1", "2", *args(killed)], tmp_path / "kill.log")
    assert kill.wait(timeout=600) == -signal.SIGKILL, (tmp_path / "kill.log").read_text()[-3000:]
    rerun = _run(["run.py", *args(killed)], tmp_path / "rerun.log")
    assert rerun.wait(timeout=600) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    assert uninterrupted.wait(timeout=600) == 0, (tmp_path / "whole.log").read_text()[-3000:]
    for log in ("whole.log", "rerun.log"):  # each labelled the crops once, the resumed run again after its restart
        assert (tmp_path / log).read_text().count("fixed training crops once (every epoch reads them)") == 1, log
    assert f"resuming {killed} from checkpoints/last.ckpt" in (tmp_path / "rerun.log").read_text()
    expected, got = read_metrics(whole), read_metrics(killed)
    assert got["test"] == expected["test"] and got["thresholds"] == expected["thresholds"]
    assert (killed / "history.csv").read_text() == (whole / "history.csv").read_text()


@pytest.mark.slow
def test_distillation_and_self_training_under_2_process_ddp_test_as_one_process_evaluates(mel_cnn_run, pool,
                                                                                          cache_dir, tmp_path):
    run_dir = tmp_path / "ddp"
    data = ["--data", "synthetic", "--synthetic-clips", "120", "--synthetic-clip-samples", str(TINY_CLIP_SAMPLES),
            "--cache-dir", str(cache_dir), "--num-workers", "0", "--no-progress", "--no-figures", "--mel-backend",
            "torchaudio"]
    command = [sys.executable, str(REPO_ROOT / "run.py"), "--model", "mel_cnn", *data, *MEL, "--accelerator", "cpu",
               "--devices", "2", "--strategy", "ddp", "--max-epochs", "2", "--recipe", "won2020", "--stage-epochs",
               "1", "--stage-lrs", "0.001", "--lr", "0.003", "--teacher", str(mel_cnn_run), "--unlabeled", str(pool),
               "--unlabeled-ratio", "0.5", "--logger", "none", "--run-dir", str(run_dir)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env=_env())
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["processes"] == 2 and config["unlabeled_ratio"] == 0.5
    trained = read_metrics(run_dir)
    assert run.main(["--evaluate", str(run_dir), "--accelerator", "cpu", "--devices", "1", "--num-workers", "0",
                     "--no-progress", "--run-dir", str(tmp_path / "evaluation")]) == 0
    single = read_metrics(tmp_path / "evaluation")
    assert single["test"]["n_clips"] == trained["test"]["n_clips"] == 21
    for key in ("roc_auc", "pr_auc", "tpr", "fpr"):
        assert single[key] == pytest.approx(trained[key], abs=1e-6), key
    assert single["thresholds"] == trained["thresholds"]


@pytest.mark.slow
def test_a_sweep_tunes_the_mixing_weight(mel_cnn_run, tiny_cache, tmp_path, capsys):
    space = {"distill_weight": {"low": 0.1, "high": 0.9}, "n_fft": None, "dropout": None, "lr": None,
             "global_decay": None}
    argv = ["--sweep", "mel_cnn", *tiny_cache.args(), *MEL, "--teacher", str(mel_cnn_run), "--max-epochs", "1",
            "--limit-train-batches", "2", "--trials", "2", "--pruner", "none", "--logger", "none",
            "--sweep-space", json.dumps(space), "--runs-root", str(tmp_path)]
    assert run.main(argv) == 0
    out = capsys.readouterr().out
    configs = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweeps").glob("*/trials/*/config.json"))]
    assert len(configs) == 2, out
    weights = [RunOptions.from_dict(c).distill_weight for c in configs]  # config.json leaves out the default, 0.9
    assert all(0.1 <= w <= 0.9 for w in weights) and weights[0] != weights[1]
    identity = read_teacher(mel_cnn_run).identity
    assert all(c["teacher_identity"] == [identity] for c in configs)
    report = json.loads(next((tmp_path / "sweeps").glob("*/best_params.json")).read_text())
    assert set(report["best"]["params"]) == {"distill_weight"}
