"""Distributed training: a 2-process DDP run on CPU (gloo) evaluates exactly as one process does.

The slow tests share one DDP run: `python run.py ... --devices 2 --strategy ddp` in a subprocess
(Lightning's `ddp` launcher starts the second rank by re-running the command line, so the child
re-runs run.py, not pytest). The synthetic dataset of 120 clips splits into 92 training, 7
validation and 21 test clips; 21 is odd and no multiple of 2 ranks x 4 clips per evaluation
batch, so the ranks get uneven shares and the last batches are partial: a sampler that padded
with duplicates would change the loss and the counts checked here.

The run monitors val/loss with mode "max", so a falling validation loss (what training does)
counts as "no improvement" and triggers the global-decay restart whose rank agreement is checked.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

import run
from callbacks.sync_buffers import SyncModelBuffers
from datamodules.datamodule import default_num_workers
from datamodules.frontend import MelConfig
from experiments.options import RunOptions
from experiments.resolve import build_datamodule, planned_processes, resolve, resolve_checkpoint
from experiments.trainer import build_strategy, cluster_plugins
from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError
from lightning_modules.registry import MODELS, build_network, input_shape, network_config, segment_layout
from lightning_modules.tagging_module import TaggingModule
from tests.support.helpers import TINY_CLIP_SAMPLES, TINY_MEL_ARGS, read_metrics, run_options, tiny_data_args
from tests.support.paths import REPO_ROOT

CLIPS = 120
EVAL_BATCH = 4
LR = 0.05
GLOBAL_DECAY = 0.2


_options = run_options


# ---------------------------------------------------------------- the DDP run (slow, shared)
@pytest.fixture(scope="module")
def ddp_run(cache_dir, tmp_path_factory):
    """The shared DDP run, on the session's 120-clip set (Lightning's launcher starts rank 1 after this
    process has prepared the data, so a cache of its own would test nothing more)."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    command = [sys.executable, str(REPO_ROOT / "run.py"), "--model", "mel_cnn",
               *tiny_data_args(cache_dir, CLIPS, mel_backend=None),  # nnAudio, the default
               *TINY_MEL_ARGS["mel_cnn"], "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
               "--max-epochs", "3", "--lr", str(LR), "--eval-batch-size", str(EVAL_BATCH), "--logger", "csv",
               "--monitor", "val/loss", "--monitor-mode", "max", "--patience", "1", "--max-restarts", "1",
               "--global-decay", str(GLOBAL_DECAY), "--run-dir", str(run_dir)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return SimpleNamespace(cache=cache_dir, run_dir=run_dir, stdout=result.stdout, stderr=result.stderr)


@pytest.mark.slow
def test_ddp_test_metrics_equal_a_single_process_evaluation(ddp_run, tmp_path):
    trained = read_metrics(ddp_run.run_dir)
    eval_dir = tmp_path / "evaluation"
    code = run.main(["--evaluate", str(ddp_run.run_dir), "--accelerator", "cpu", "--devices", "1",
                     "--num-workers", "0", "--no-progress", "--run-dir", str(eval_dir)])
    assert code == 0
    single = read_metrics(eval_dir)
    n_test = trained["test"]["n_clips"]
    assert n_test % 2 == 1 and n_test % (2 * EVAL_BATCH) != 0  # uneven ranks, partial last batches
    assert single["test"]["n_clips"] == n_test == 21  # every test clip once (segments_per_clip is 1)
    assert single["best_checkpoint"] == trained["best_checkpoint"]
    for key in ("roc_auc", "pr_auc", "tpr", "fpr"):
        assert single[key] == pytest.approx(trained[key], abs=1e-6), key
    for key in ("per_tag_roc_auc", "per_tag_pr_auc", "per_tag_tpr", "per_tag_fpr"):
        a, b = trained["test"][key], single["test"][key]
        assert [x is None or math.isnan(x) for x in a] == [x is None or math.isnan(x) for x in b], key
        assert [x for x in a if x is not None and not math.isnan(x)] == pytest.approx(
            [x for x in b if x is not None and not math.isnan(x)], abs=1e-6), key
    assert single["thresholds"] == trained["thresholds"]  # the checkpoint's, chosen on DDP validation
    config = json.loads((eval_dir / "config.json").read_text())
    assert config["evaluated_checkpoint"] == trained["best_checkpoint"] and config["model"] == "mel_cnn"


# ---------------------------------------------------------------- every literature model under DDP (slow, shared)
LITERATURE = [name for name, spec in MODELS.items() if spec.recipe == "won2020"]


@pytest.fixture(scope="module")
def ddp_models_run(cache_dir, tmp_path_factory):
    """One `torchrun --nproc-per-node 2` launch in which both ranks train every literature model in turn
    (tests/support/ddp_models.py): one epoch of two batches each, their CPU-sized variants, on the session's
    generated data (its 120-clip set, made once for every test)."""
    from tests.support.pg_server import free_port

    out = tmp_path_factory.mktemp("ddp-models")
    ports = ",".join(str(free_port()) for _ in LITERATURE)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), str(REPO_ROOT / "tests" / "support" / "ddp_models.py"), str(cache_dir), str(out), ports,
               *LITERATURE]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", LITERATURE)
def test_each_literature_model_trains_under_ddp_and_tests_as_one_process_evaluates(name, ddp_models_run, tmp_path,
                                                                                    cpu_variant):
    cpu_variant(name)
    run_dir = ddp_models_run / name
    trained = read_metrics(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["processes"] == 2 and config["model"] == name
    assert run.main(["--evaluate", str(run_dir), "--accelerator", "cpu", "--devices", "1", "--num-workers", "0",
                     "--no-progress", "--logger", "none", "--run-dir", str(tmp_path / "evaluation")]) == 0
    single = read_metrics(tmp_path / "evaluation")
    assert single["test"]["n_clips"] == trained["test"]["n_clips"] == 21  # every test clip once, over uneven ranks
    ddp, one = np.load(run_dir / "test_predictions.npz"), np.load(tmp_path / "evaluation" / "test_predictions.npz")
    assert np.array_equal(ddp["clip_ids"], one["clip_ids"])
    # The same probabilities up to float rounding (batches split differently over ranks), well inside how
    # much they differ between clips (so a clip given another's output would show).
    spread = float(ddp["probs"].std(axis=0).mean())
    difference = float(np.abs(ddp["probs"] - one["probs"]).max())
    assert difference < min(1e-6, spread / 10), (difference, spread)
    assert single["thresholds"] == trained["thresholds"]
    # After two steps sample_cnn_se's eval-mode outputs (batch norm's running statistics are far from
    # converged) differ between clips by only ~3e-6; rounding then reorders near-ties and moves the
    # ranking metrics. They are compared where the outputs are spread enough to rank the clips stably.
    if spread > 1e-4:
        for key in ("roc_auc", "pr_auc", "tpr", "fpr"):
            assert single[key] == pytest.approx(trained[key], abs=1e-6), key
    else:
        assert name == "sample_cnn_se", spread


@pytest.mark.slow
def test_ddp_validation_equals_single_process_validation_of_the_checkpoint(ddp_run):
    """Validation metrics, and the thresholds chosen on them, are those of one process evaluating the checkpoint.

    Fails if ranks validated with different BatchNorm statistics (no SyncModelBuffers) or if
    the validation sampler padded with duplicates (the segment-weighted loss would move).
    """
    best = Path(read_metrics(ddp_run.run_dir)["best_checkpoint"])
    epoch = int(best.stem.split("-")[-1])
    config = json.loads((ddp_run.run_dir / "config.json").read_text())
    options = RunOptions.from_dict(config)
    module = TaggingModule.from_checkpoint(best)
    saved_thresholds = module.thresholds.clone()
    datamodule = build_datamodule(resolve_checkpoint(options, best, dict(module.hparams)))
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    logged = pd.read_csv(ddp_run.run_dir / "logs" / "metrics.csv")
    row = logged[(logged["epoch"] == epoch) & logged["val/loss"].notna()].iloc[-1]
    assert float(trainer.callback_metrics["val/loss"]) == pytest.approx(row["val/loss"], rel=1e-6)
    assert module.last_val_report.roc_auc == pytest.approx(row["val/roc_auc"], abs=1e-6)
    assert module.last_val_report.n_clips == len(datamodule.dataset("valid").rows)
    torch.testing.assert_close(module.thresholds, saved_thresholds, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_ddp_ranks_take_the_same_global_decay_decisions(ddp_run):
    logged = pd.read_csv(ddp_run.run_dir / "logs" / "metrics.csv")
    # logged with sync_dist=True: the mean over both ranks, fractional if the ranks disagreed
    restarts = logged["train/restarts"].dropna().tolist()
    rates = logged["train/global_lr"].dropna().tolist()
    assert restarts == [float(int(r)) for r in restarts] and max(restarts) == 1.0
    expected = [LR * GLOBAL_DECAY ** int(r) for r in restarts]  # paper schedule, first restart: x g
    assert rates == pytest.approx(expected, rel=1e-6)
    assert ddp_run.stderr.count("restart 1/1") == 1  # decided (and printed, on stderr) once, by rank 0
    last = torch.load(ddp_run.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    (state,) = [s for k, s in last["callbacks"].items() if k.startswith("GlobalDecayRestart")]
    assert state["restarts"] == 1


# ---------------------------------------------------------------- strategy, buffers, workers (fast)
def test_nnaudio_kernels_are_not_model_buffers():
    """The frontend lives in the data module: DDP never sees (or broadcasts) its 17 MB of kernels."""
    spec = MODELS["mel_cnn"]
    frontend = MelConfig.from_dict({**spec.frontend.to_dict(), "hop_length": 512, "n_mels": 96})
    layout = segment_layout(spec, TINY_CLIP_SAMPLES, frontend)
    config = network_config(spec, input_shape(frontend, layout), 50)
    module = TaggingModule(build_network(config), config, [f"t{i}" for i in range(50)], frontend.to_dict(),
                           layout.to_dict(), SAMPLE_RATE)
    names = [name for name, _ in module.named_buffers()]
    assert all(n in ("thresholds", "threshold_fallback")
               or n.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked") for n in names), names
    assert sum(b.numel() * b.element_size() for b in module.buffers()) < 4096
    datamodule = build_datamodule(resolve(_options(*TINY_MEL_ARGS["mel_cnn"])))
    assert sum(b.numel() * b.element_size() for b in datamodule.frontend.buffers()) > 1_000_000


def test_strategy_is_ddp_without_per_step_buffer_broadcast_when_several_processes():
    from lightning.pytorch.strategies import DDPStrategy

    assert build_strategy(resolve(_options("--accelerator", "cpu"))) == "auto"
    assert planned_processes(_options("--accelerator", "cpu", "--devices", "2", "--num-nodes", "3")) == 6
    assert planned_processes(_options("--accelerator", "gpu", "--devices", "0,1")) == 2
    for extra in (["--devices", "2"], ["--num-nodes", "2"], ["--strategy", "ddp"]):
        strategy = build_strategy(resolve(_options("--accelerator", "cpu", *extra)))
        assert isinstance(strategy, DDPStrategy), extra
        assert strategy._ddp_kwargs == {"find_unused_parameters": False, "forward_sync_buffers": False}


def test_invalid_distributed_and_precision_options_are_config_errors(capsys):
    with pytest.raises(ConfigError, match="SyncBatchNorm"):
        resolve(_options("--accelerator", "cpu", "--devices", "2", "--sync-batchnorm"))
    with pytest.raises(ConfigError, match="16-mixed needs a GPU"):
        resolve(_options("--accelerator", "cpu", "--precision", "16-mixed"))
    assert resolve(_options("--accelerator", "cpu", "--precision", "bf16-mixed")).precision == "bf16-mixed"
    for bad in ("two", "0", "-2", "1,x"):
        with pytest.raises(ConfigError, match="--devices"):
            _options("--devices", bad)
    assert _options("--devices", "[0, 2]").devices == [0, 2] and _options("--devices", "-1").devices == -1
    with pytest.raises(SystemExit):
        run.build_parser().parse_args(["--strategy", "fsdp"])
    assert "invalid choice" in capsys.readouterr().err


def test_slurm_environment_is_detected_without_lightnings_requeue_handler(monkeypatch):
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    for name in [n for n in os.environ if n.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    assert cluster_plugins() == []
    for name, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "42", "SLURM_PROCID": "0",
                        "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}.items():
        monkeypatch.setenv(name, value)
    (environment,) = cluster_plugins()
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue is False
    trainer = pl.Trainer(accelerator="cpu", devices=1, plugins=cluster_plugins(), logger=False)
    assert trainer._accelerator_connector.cluster_environment.auto_requeue is False


def test_sync_model_buffers_is_a_no_op_on_one_process():
    module = torch.nn.BatchNorm1d(3)
    module.running_mean.fill_(2.0)
    SyncModelBuffers.sync(SimpleNamespace(world_size=1), module)
    assert module.running_mean.tolist() == [2.0, 2.0, 2.0]


def test_loader_workers_are_sized_to_each_processs_share_of_the_cores(monkeypatch):
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_num_workers(1) == 8 and default_num_workers(2) == 7 and default_num_workers(4) == 3
    assert default_num_workers(16) == 0  # one core per process: load in the process itself
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert default_num_workers(1) == 1 and default_num_workers(2) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert default_num_workers(4) == 5  # srun gave this task its own 6 cores

    datamodule = build_datamodule(resolve(_options()))
    datamodule.trainer = SimpleNamespace(world_size=8, num_nodes=2,
                                         strategy=SimpleNamespace(root_device=torch.device("cpu")))
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert datamodule._processes_on_this_node() == 4 and datamodule._num_workers() == 3
    assert datamodule._pin_memory() is False  # pinned memory only helps copies to a GPU
    datamodule.trainer.strategy.root_device = torch.device("cuda", 0)
    assert datamodule._pin_memory() is True
