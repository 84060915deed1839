"""On a CUDA GPU: the frontend, every model at every precision, checkpoints, DDP options, compile, tagging.

These run only where CUDA is available (CI has no GPU: they are skipped there, with that reason);
run them on a GPU machine with ``pytest tests/integration/test_gpu.py``. What they prove:

- the Mel frontend on the GPU equals the CPU one (nnAudio and torchaudio), and stays finite and
  float32 for full-scale audio under float16/bfloat16 autocast on CUDA;
- each model trains, validates and tests on the GPU in fp32, bf16-mixed and 16-mixed, with its
  batches and network on CUDA, finite metrics, and a checkpoint that holds no frontend kernels and
  loads on a CPU-only machine;
- a checkpoint trained on the GPU evaluates on the CPU to the same ROC-AUC;
- ``--strategy ddp --devices 1 --sync-batchnorm`` and ``--compile`` run on the GPU;
- ``--tag`` on the GPU gives the CPU's tag probabilities.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from lightning.pytorch.callbacks import Callback

import run
from datamodules.frontend import LogMel, MelConfig
from experiments.train import run_experiment
from infrastructure.audio import SAMPLE_RATE
from lightning_modules.registry import MODELS as REGISTERED
from tagging.tagger import Tagger
from tests.support.helpers import TINY_CLIP_SAMPLES, read_metrics, run_options, small_model_args, tiny_data_args

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CLIPS = 120
QUICK = ["--max-epochs", "1", "--limit-train-batches", "3", "--batch-size", "8", "--logger", "csv",
         "--accelerator", "gpu", "--devices", "1"]
MODELS = tuple(REGISTERED)  # the paper's four and the eight literature models (their CPU-sized variants)
# nnAudio's STFT kernels and the Mel filter banks: never in a checkpoint.
KERNEL_KEYS = ("wsin", "wcos", "mel_basis", "fb", "window")


def _options(cache_dir, run_dir, model, *extra: str) -> dict:
    clip_samples = max(TINY_CLIP_SAMPLES, REGISTERED[model].frame_samples or 0)  # harmonic_cnn's chunk is 5 s
    data = tiny_data_args(cache_dir, CLIPS, clip_samples, mel_backend=None)  # nnAudio on the GPU, as the design asks
    argv = ["--model", model, *data, *small_model_args(model), *QUICK, "--run-dir", str(run_dir), *extra]
    return run_options(*argv[2:], model=model)


class DeviceProbe(Callback):
    """Records where the training batches and the network are, and the network's output dtype."""

    def __init__(self):
        self.batch_devices: set[str] = set()
        self.network_devices: set[str] = set()
        self.output_dtypes: set[torch.dtype] = set()

    def on_fit_start(self, trainer, pl_module):
        pl_module.network.register_forward_hook(lambda m, a, output: self.output_dtypes.add(output.dtype))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch_devices.add(batch["input"].device.type)
        self.network_devices |= {p.device.type for p in pl_module.network.parameters()}


def _full_scale(n_samples: int, batch: int = 2) -> torch.Tensor:
    t = torch.arange(n_samples) / SAMPLE_RATE
    square = torch.sign(torch.sin(2 * math.pi * 220 * t))
    square[square == 0] = 1.0
    return square.repeat(batch, 1)


@pytest.mark.parametrize("backend", ["nnaudio", "torchaudio"])
def test_frontend_on_gpu_equals_cpu_and_is_finite_under_cuda_autocast(backend):
    config = MelConfig(backend=backend)
    waveform = 0.3 * torch.randn(4, 48_000, generator=torch.Generator().manual_seed(0))
    on_cpu = LogMel(config)(waveform)
    frontend = LogMel(config).cuda()
    on_gpu = frontend(waveform.cuda())
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32
    # dB of power: compare where the power is meaningful (within 80 dB of the peak).
    mask = on_cpu > on_cpu.max() - 80
    torch.testing.assert_close(on_gpu.cpu()[mask], on_cpu[mask], atol=0.05, rtol=0)
    loud = _full_scale(48_000).cuda()
    reference = frontend(loud)
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cuda", dtype=dtype):
            out = frontend(loud)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        torch.testing.assert_close(out, reference)


@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("model", MODELS)
def test_each_model_trains_and_tests_on_the_gpu(model, precision, cache_dir, tmp_path, cpu_variant):
    cpu_variant(model)
    probe = DeviceProbe()
    outcome = run_experiment(_options(cache_dir, tmp_path / "run", model, "--precision", precision), (probe,))
    assert probe.batch_devices == {"cuda"} and probe.network_devices == {"cuda"}
    expected = {"32": {torch.float32}, "bf16-mixed": {torch.bfloat16}, "16-mixed": {torch.float16}}[precision]
    assert probe.output_dtypes & expected, probe.output_dtypes
    metrics = read_metrics(outcome.run_dir)
    assert all(math.isfinite(metrics[k]) for k in ("roc_auc", "pr_auc", "tpr", "fpr"))
    assert metrics["test"]["n_clips"] > 0
    checkpoint = torch.load(outcome.best_checkpoint, map_location="cpu", weights_only=False)
    keys = list(checkpoint["state_dict"])
    assert not [k for k in keys if k.rsplit(".", 1)[-1] in KERNEL_KEYS], keys
    assert all(t.device.type == "cpu" for t in checkpoint["state_dict"].values())


def test_a_gpu_checkpoint_evaluates_on_the_cpu_to_the_same_auc(cache_dir, tmp_path, monkeypatch):
    # TF32 convolutions (cuDNN's default) round to 10-bit mantissas: on an untrained model, whose
    # scores for different clips lie close together, that swaps enough ranks to move the AUC by
    # 2e-3 (seen on an H200). In full float32 the GPU and CPU agree to rounding.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    outcome = run_experiment(_options(cache_dir, tmp_path / "gpu", "mel_cnn"))
    gpu_auc = read_metrics(outcome.run_dir)["roc_auc"]
    cpu_dir = tmp_path / "cpu-evaluation"
    code = run.main(["--evaluate", str(outcome.run_dir), "--accelerator", "cpu", "--devices", "1",
                     "--run-dir", str(cpu_dir), "--logger", "none", "--no-progress", "--num-workers", "0"])
    assert code == 0
    cpu_auc = read_metrics(cpu_dir)["roc_auc"]
    assert abs(cpu_auc - gpu_auc) < 1e-3, (gpu_auc, cpu_auc)


def test_ddp_strategy_with_sync_batchnorm_on_one_gpu(cache_dir, tmp_path):
    outcome = run_experiment(_options(cache_dir, tmp_path / "ddp", "mel_cnn", "--strategy", "ddp",
                                      "--sync-batchnorm"))
    config = json.loads((outcome.run_dir / "config.json").read_text())
    assert config["sync_batchnorm"] is True and config["strategy"] == "ddp"
    assert math.isfinite(read_metrics(outcome.run_dir)["roc_auc"])


def test_compiled_network_trains_on_the_gpu_and_saves_a_plain_checkpoint(cache_dir, tmp_path):
    outcome = run_experiment(_options(cache_dir, tmp_path / "compiled", "mel_cnn", "--compile",
                                      "--precision", "bf16-mixed"))
    assert math.isfinite(read_metrics(outcome.run_dir)["roc_auc"])
    state = torch.load(outcome.best_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert not [k for k in state if "_orig_mod" in k]


def test_tagging_on_the_gpu_gives_the_cpu_probabilities(cache_dir, tmp_path):
    outcome = run_experiment(_options(cache_dir, tmp_path / "lstm", "lstm_mel"))
    rng = np.random.default_rng(0)
    song = tmp_path / "song.wav"
    sf.write(song, (0.2 * rng.standard_normal((SAMPLE_RATE * 5, 2))).astype(np.float32), SAMPLE_RATE)
    on_gpu = Tagger.from_checkpoint(outcome.best_checkpoint, device="cuda").tag(song)
    on_cpu = Tagger.from_checkpoint(outcome.best_checkpoint, device="cpu").tag(song)
    np.testing.assert_allclose(on_gpu.segment_probs, on_cpu.segment_probs, atol=2e-3)
