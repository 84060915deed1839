"""Speed options: --precision (the Mel frontend stays float32) and --compile (checkpoints stay plain).

A bf16-mixed run on CPU trains with the network under bfloat16 autocast while the batches reach
it as float32 log-Mel spectrograms; a --compile run trains a compiled network whose checkpoint
loads into an uncompiled one.
"""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import run
from experiments.train import run_experiment
from lightning_modules.tagging_module import TaggingModule
from tests.support.helpers import TINY_MEL_ARGS, read_metrics, run_options, tiny_data_args

CLIPS = 120
QUICK = ["--max-epochs", "1", "--limit-train-batches", "2", "--limit-val-batches", "1.0",
         "--limit-test-batches", "1.0", "--logger", "csv", "--accelerator", "cpu", "--batch-size", "8"]


def _options(cache_dir, run_dir, *extra: str) -> dict:
    argv = ["--model", "mel_cnn", *tiny_data_args(cache_dir, CLIPS), *TINY_MEL_ARGS["mel_cnn"], *QUICK,
            "--run-dir", str(run_dir), *extra]
    return run_options(*argv[2:], model="mel_cnn")


class DtypeProbe(Callback):
    """Records the dtype of the batches the network receives and of the logits it returns."""

    def __init__(self):
        self.inputs: list[torch.dtype] = []
        self.outputs: list[torch.dtype] = []
        self.compiled: list[bool] = []

    def on_fit_start(self, trainer, pl_module):
        pl_module.network.register_forward_hook(lambda module, args, output: self.outputs.append(output.dtype))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.inputs.append(batch["input"].dtype)
        self.compiled.append(getattr(pl_module.network, "_compiled_call_impl", None) is not None)


@pytest.mark.slow
def test_bf16_mixed_trains_the_network_in_bfloat16_on_float32_mel_input(cache_dir, tmp_path):
    probe = DtypeProbe()
    outcome = run_experiment(_options(cache_dir, tmp_path / "bf16", "--precision", "bf16-mixed"), (probe,))
    assert probe.inputs == [torch.float32, torch.float32]  # the log-Mel batches: float32
    assert torch.bfloat16 in probe.outputs  # the network ran under bf16 autocast
    metrics = read_metrics(outcome.run_dir)
    assert all(math.isfinite(metrics[k]) for k in ("roc_auc", "pr_auc", "tpr", "fpr"))
    assert metrics["test"]["n_clips"] > 0


@pytest.mark.slow
def test_float32_runs_the_network_in_float32(cache_dir, tmp_path):
    probe = DtypeProbe()
    run_experiment(_options(cache_dir, tmp_path / "fp32", "--limit-val-batches", "1", "--limit-test-batches", "1"),
                   (probe,))
    assert probe.inputs == [torch.float32, torch.float32] and set(probe.outputs) == {torch.float32}
    assert probe.compiled == [False, False]


def test_a_compile_backend_without_compile_fails_at_once(tmp_path, capsys):
    code = run.main(["--model", "mel_cnn", "--compile-backend", "eager", "--cache-dir", str(tmp_path / "never-made"),
                     "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --compile-backend eager needs --compile"]
    assert not (tmp_path / "never-made").exists()


def test_16_mixed_on_cpu_fails_at_once_with_a_hint(tmp_path, capsys):
    code = run.main(["--model", "mel_cnn", "--accelerator", "cpu", "--precision", "16-mixed",
                     "--cache-dir", str(tmp_path / "never-made"), "--run-dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "16-mixed needs a GPU" in err and "use bf16-mixed on CPU" in err
    assert not (tmp_path / "never-made").exists()  # failed before preparing any data


@pytest.mark.slow
def test_compile_trains_a_compiled_network_and_writes_a_plain_checkpoint(cache_dir, tmp_path):
    probe = DtypeProbe()
    # One evaluation batch shape (4 clips) for validation and test: one eval-mode compilation. aot_eager traces
    # the forward and backward graphs as inductor does but generates no C++ kernels (a third of the time on
    # 2 CPU cores); tests/integration/test_gpu.py compiles with the default inductor.
    outcome = run_experiment(_options(cache_dir, tmp_path / "compiled", "--compile", "--compile-backend", "aot_eager",
                                      "--limit-val-batches", "1", "--limit-test-batches", "1",
                                      "--eval-batch-size", "4"), (probe,))
    assert probe.compiled == [True, True]
    checkpoint = outcome.run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert not [key for key in state if "_orig_mod" in key]
    plain = TaggingModule.from_checkpoint(checkpoint)  # strict load into an uncompiled network
    assert getattr(plain.network, "_compiled_call_impl", None) is None
    kwargs = plain.hparams.network_config["kwargs"]
    with torch.no_grad():
        logits = plain(torch.randn(2, kwargs["n_mels"], kwargs["n_frames"]))
    assert logits.shape == (2, len(plain.tags)) and torch.isfinite(logits).all()
