"""Smoke tests of the benchmarks: each `--quick` mode runs on tiny sizes and writes its ratio fields.

The quick modes use a 6-clip synthetic dataset of 118,098-sample clips (48 rows, linked) kept in
one temporary work folder shared by the tests; the figures they produce are not meaningful.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-work")


def run_benchmark(script: str, work: Path, out: Path, *extra: str) -> dict:
    """`python benchmarks/SCRIPT.py --quick ...`, run through the script's `main` in this process (the test
    process has imported torch and Lightning already; the scripts' own measuring subprocesses still run)."""
    module = importlib.import_module(f"benchmarks.{script}")
    assert module.main(["--quick", "--work-dir", str(work), "--out-dir", str(out), *extra]) == 0
    payload = json.loads((out / f"{script}.quick.json").read_text())
    markdown = (out / f"{script}.quick.md").read_text()
    assert payload["benchmark"] == script and payload["quick"] is True
    assert payload["machine"]["cores"] >= 1 and payload["machine"]["cpu_model"]
    assert "Machine:" in markdown
    return payload


def positive_numbers(value) -> list[float]:
    """Every number in a nested dict of ratios (all must be finite and positive)."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in positive_numbers(v)]
    assert isinstance(value, (int, float)) and not isinstance(value, bool), value
    assert math.isfinite(value) and value > 0, value
    return [value]


@pytest.mark.slow
def test_data_pipeline_quick(work_dir, tmp_path):
    payload = run_benchmark("data_pipeline", work_dir, tmp_path)
    ratios = payload["ratios"]
    for key in ("prepare_vs_librosa", "prepare_1worker_vs_librosa", "prepare_vs_cores_x_decode",
                "prepare_cpu_vs_decode_cpu", "loader_vs_npy_load", "loader_vs_npy_mmap", "loader_vs_consumption",
                "loader_vs_fastest_model"):
        assert key in ratios
    positive_numbers(ratios)
    assert set(ratios["loader_vs_consumption"]) == {"mel_cnn"}
    # the ratios are the quotients of the absolute figures written next to them
    prepare = payload["prepare"]
    expected = prepare["prepare_all"]["clips_per_s"] / prepare["librosa_1proc"]["clips_per_s"]
    assert ratios["prepare_vs_librosa"] == pytest.approx(expected)
    assert prepare["clips"] == 48
    assert "## Ratios" in (tmp_path / "data_pipeline.quick.md").read_text()


@pytest.mark.slow
def test_frontend_quick(work_dir, tmp_path):
    payload = run_benchmark("frontend", work_dir, tmp_path, "--models", "mel_cnn")
    ratios = payload["ratios"]["mel_cnn"]
    assert set(ratios) == {"nnaudio_vs_torchaudio", "frontend_share_nnaudio", "frontend_share_torchaudio",
                           "step_speedup_with_torchaudio"}
    positive_numbers(ratios)
    assert ratios["frontend_share_nnaudio"] < 1 and ratios["frontend_share_torchaudio"] < 1
    result = payload["results"][0]
    assert result["max_db_difference"] < 0.1  # both backends compute the same log-Mel


@pytest.mark.slow
def test_training_quick(work_dir, tmp_path):
    payload = run_benchmark("training", work_dir, tmp_path, "--models", "mel_cnn,sample_cnn_frames")
    ratios = payload["ratios"]
    assert set(ratios["clips_per_s_vs_fastest"]) == {"mel_cnn", "sample_cnn_frames"}
    assert max(ratios["clips_per_s_vs_fastest"].values()) == pytest.approx(1.0)
    for key in ("lightning_vs_plain", "lightning_vs_plain_median", "lightning_vs_plain_cpu"):
        positive_numbers(ratios[key])
    for model in payload["models"]:
        assert model["peak_rss_mib"] >= model["rss_before_steps_mib"] > 0
        assert model["network_flops_per_step"] > 0
    assert payload["overhead"]["plain_epoch_seconds"]["values"] and payload["overhead"]["lightning_epoch_seconds"]["values"]


@pytest.mark.slow
def test_gpu_quick(work_dir, tmp_path):
    if not torch.cuda.is_available():
        payload = run_benchmark("gpu", work_dir, tmp_path)
        assert payload["skipped"] is True and "no CUDA GPU" in payload["reason"]
        assert "Skipped" in (tmp_path / "gpu.quick.md").read_text()
        # the same code, run on the CPU, produces every ratio field
        payload = run_benchmark("gpu", work_dir, tmp_path, "--allow-cpu", "--skip-overhead")
    else:
        payload = run_benchmark("gpu", work_dir, tmp_path, "--skip-overhead")
    assert payload["skipped"] is False
    ratios = payload["ratios"]
    positive_numbers(ratios["bf16_vs_fp32_speed"])
    positive_numbers(ratios["bf16_vs_fp32_memory"])
    positive_numbers(ratios["frontend_nnaudio_vs_torchaudio"])
    assert set(ratios["mfu"]) == {"mel_cnn/32", "mel_cnn/bf16-mixed"}
    assert payload["epoch"]["train_clips"] == 36 and payload["epoch"]["train_epoch_seconds"] > 0


@pytest.mark.slow
def test_models_quick(work_dir, tmp_path):
    payload = run_benchmark("models", work_dir, tmp_path, "--runs", "mel_cnn:paper,mel_cnn:modern")
    runs = payload["runs"]
    assert [(r["model"], r["recipe"]) for r in runs] == [("mel_cnn", "paper"), ("mel_cnn", "modern")]
    assert runs[0]["optimizer"] == "sgd" and runs[1]["optimizer"] == "adamw"  # the recipe reached the run
    assert payload["complete"] is True and runs[0]["parameters"] > 0
    ratios = payload["ratios"]
    assert ratios["epoch_time_vs_baseline"]["mel_cnn:paper"] == pytest.approx(1.0)
    assert ratios["roc_auc_minus_baseline"]["mel_cnn:modern"] == pytest.approx(
        runs[1]["test_roc_auc"] - runs[0]["test_roc_auc"])
    for run in runs:
        assert 0 <= run["test_roc_auc"] <= 1 and run["peak_rss_mib"] > 0 and run["train_epoch_seconds"]
    assert "Ranked by test ROC-AUC" in (tmp_path / "models.quick.md").read_text()


def test_machine_names_the_cpu_generation_behind_a_masked_model_name():
    from benchmarks.common import cpu_model

    info = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 49\nmodel name\t: AMD EPYC\n"
            "flags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nmodel name\t: other\n")
    assert cpu_model(info) == "AMD EPYC (family 23 model 49, avx2)"
    assert cpu_model("model name\t: Intel Xeon\nflags\t: avx2 avx512f amx_tile\n") == "Intel Xeon (avx512f, avx2, amx_tile)"
    assert cpu_model("")  # no /proc/cpuinfo: the platform's name


def test_a_measurement_names_every_code_file_no_commit_holds(tmp_path):
    import subprocess

    from benchmarks.common import git_state, machine_line

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    for path in ("experiments/train.py", "benchmarks/distillation.py", "benchmarks/results/distillation.md",
                 "docs/index.md", "README.md", "run.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("v1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    assert git_state(tmp_path)["suite_files_modified"] == []
    for path in ("experiments/train.py", "benchmarks/distillation.py", "benchmarks/results/distillation.md",
                 "docs/index.md", "README.md"):
        (tmp_path / path).write_text("v2\n")
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "new.py").write_text("")
    state = git_state(tmp_path)
    assert sorted(state["suite_files_modified"]) == ["benchmarks/distillation.py", "experiments/train.py",
                                                     "sweeps/new.py"]
    info = dict(cpu_model="cpu", cores=2, torch="t", torchaudio="a", nnAudio="n", lightning="l", python="p",
                date="d", **state)
    assert machine_line(info).endswith(f"code: commit {state['git_commit']} with uncommitted changes in "
                                       "benchmarks/distillation.py, experiments/train.py, sweeps/new.py")


def test_models_benchmark_gives_every_model_an_epoch_of_one_look_per_clip(tmp_path):
    from benchmarks import models
    from experiments.cli import parse_command
    from lightning_modules.registry import MODELS

    args = models.parse_args(["--work-dir", str(tmp_path)])
    assert len(args.runs) == 12
    for pair in args.runs:
        options = parse_command(models.run_argv(pair, args, tmp_path)).run
        spec = MODELS[options.model]
        if (options.train_crop or spec.train_crop) == "random":
            assert options.random_crops_per_clip == 1, pair
        else:  # fixed crops: the one whole-clip segment
            assert options.random_crops_per_clip is None and (options.segments_per_clip or spec.segments_per_clip) == 1


def test_jamendo_prepare_quick(work_dir, tmp_path):
    payload = run_benchmark("jamendo_prepare", work_dir, tmp_path)
    ratios = payload["ratios"]
    assert set(ratios) == {"prepare_vs_cores_x_decode", "prepare_1worker_vs_decode", "prepare_all_vs_1worker",
                           "prepare_cpu_vs_decode_cpu"}
    positive_numbers(ratios)
    results, cores = payload["results"], payload["settings"]["prepare_workers"]
    rates = {key: results[key]["audio_s_per_s"] for key in ("decode_1core", "prepare_1worker", "prepare_all")}
    assert ratios["prepare_vs_cores_x_decode"] == pytest.approx(rates["prepare_all"] / (cores * rates["decode_1core"]))
    # every measurement decoded every prepared track: the same seconds of audio, those of the generated files
    audio = {results[key]["audio_seconds"] for key in rates}
    assert len(audio) == 1 and audio.pop() == pytest.approx(payload["tracks"]["audio_seconds"], rel=1e-3)
    assert payload["tracks"]["n"] == results["prepare_all"]["tracks"] <= payload["settings"]["tracks"] == 24
    for key in rates:
        assert results[key]["peak_rss_mib"] > 0 and results[key]["rss_growth_mib"] >= 0
    markdown = (tmp_path / "jamendo_prepare.quick.md").read_text()
    assert "## Ratios" in markdown and "Load average at start" in markdown


@pytest.mark.slow
def test_startup_quick(work_dir, tmp_path):
    payload = run_benchmark("startup", work_dir, tmp_path)
    assert set(payload["results"]) >= {"--help", "bad value (--lr -0.01)", "plan"}
    positive_numbers({name: result["ratio_to_lightning_import"] for name, result in payload["results"].items()})


@pytest.mark.slow
def test_flagship_quick(work_dir, tmp_path):
    payload = run_benchmark("flagship", work_dir, tmp_path)
    assert payload["plan_seconds"] < payload["total_seconds"]
    assert payload["counts"] == {"COMPLETE": 2} and 0 <= payload["best"]["test_roc_auc"] <= 1


@pytest.mark.slow
def test_distillation_quick(work_dir, tmp_path):
    payload = run_benchmark("distillation", work_dir, tmp_path)
    assert set(payload["comparison"]) == {"student", "student_long", "ensemble", "distilled", "selftrained"}
    positive_numbers(payload["ratios"]["epoch_time_vs_student"])
    # the differences are paired with the student alone, which is the reference row
    assert payload["comparison"]["student"]["reference"] and not payload["comparison"]["distilled"].get("reference")
    runs = payload["runs"]
    assert all(Path(r["run_dir"], "metrics.json").is_file() for rs in runs.values() for r in rs)
    distilled = json.loads(Path(runs["distilled"][0]["run_dir"], "config.json").read_text())
    assert len(distilled["teacher_identity"]) == len(payload["teachers"])
    assert Path(runs["selftrained"][0]["run_dir"], "config.json").read_text().count('"unlabeled"') == 1
