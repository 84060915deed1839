"""A new network is one file plus one registry entry (issue 27): this file is both.

`ToyNet` below is a network written against the shared interface (lightning_modules/networks/base.py), and
`TOY` its registry entry; the `toy_model` fixture registers it (and removes it afterwards). With nothing else
changed anywhere, `run.py` trains and tests it, evaluates its run, prints its summary, sweeps it (its entry declares
no space: the default one) and tags audio with its checkpoint, and its LightningModule class exists. The last test
checks that no other code of the repository names it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pytest
import soundfile as sf
import torch
from torch import nn

import run
from datamodules.mel_config import MelConfig
from lightning_modules.networks.base import MelNetwork
from lightning_modules.registry import ModelSpec, register, unregister
from tests.support.helpers import one_torch_thread, read_metrics
from tests.support.paths import REPO_ROOT


class ToyNet(MelNetwork):
    """Conv1d over the Mel bands + BN + ReLU, mean over time, dropout, dense: log-Mel -> tag logits."""

    def __init__(self, n_mels: int, n_frames: int, n_tags: int, channels: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        self.n_mels, self.n_frames, self.n_tags = n_mels, n_frames, n_tags
        self.conv = nn.Sequential(nn.Conv1d(n_mels, channels, 3, padding=1), nn.BatchNorm1d(channels), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, n_tags)

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        return self.conv(mel).mean(dim=2)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(embedding))

    def paper_layers(self):
        yield f"conv 3 - {self.conv[0].out_channels}, mean over time", self.conv
        yield f"dropout {self.dropout.p:g}", self.dropout
        yield f"dense {self.n_tags}", self.classifier


TOY = ModelSpec(name="toy_net", table="a test's toy network", network=f"{__name__}:ToyNet",
                frontend=MelConfig(n_fft=512, hop_length=512, n_mels=32), segments_per_clip=2, train_crop="fixed",
                batch_size=16, network_defaults=(("dropout", 0.1),), width_kwarg="channels")

TRAIN = ["--max-epochs", "2", "--optimizer", "adam", "--lr", "0.003", "--logger", "none"]


@pytest.fixture(scope="module")
def toy_model():
    spec = register(TOY)
    yield spec
    unregister(spec.name)


@pytest.fixture(scope="module")
def toy_run(toy_model, tiny_cache, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("toy") / "run"
    with one_torch_thread():
        assert run.main(["--model", "toy_net", *tiny_cache.args(), *TRAIN, "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.mark.slow
def test_the_toy_network_trains_tests_and_evaluates(toy_run, capsys):
    config = json.loads((toy_run / "config.json").read_text())
    assert config["model"] == "toy_net"
    assert config["resolved"]["network"] == {"name": "toy_net", "class": "ToyNet", "kwargs": {
        "dropout": 0.1, "n_mels": 32, "n_frames": 58, "n_tags": len(config["resolved"]["tags"])}}
    metrics = read_metrics(toy_run)
    assert math.isfinite(metrics["roc_auc"]) and metrics["test"]["n_clips"] > 0
    evaluation = toy_run.parent / "evaluation"
    with one_torch_thread():
        assert run.main(["--evaluate", str(toy_run), "--run-dir", str(evaluation), "--no-progress",
                         "--logger", "none"]) == 0
    for key in ("roc_auc", "pr_auc", "tpr", "fpr"):
        assert read_metrics(evaluation)[key] == pytest.approx(metrics[key], abs=1e-6), key


@pytest.mark.slow
def test_the_toy_networks_module_class_loads_its_checkpoint_and_embeds(toy_run):
    from lightning_modules.architectures import ToyNetModule, module_class
    from lightning_modules.tagging_module import TaggingModule

    assert module_class("toy_net") is ToyNetModule and ToyNetModule.MODEL == "toy_net"
    checkpoint = next((toy_run / "checkpoints").glob("best*.ckpt"))
    module = ToyNetModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    generic = TaggingModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    x = torch.randn(4, 32, 58)
    with torch.no_grad():
        assert module.network.embed(x).shape == (4, 8)
        torch.testing.assert_close(module(x), generic(x), rtol=0, atol=0)
        torch.testing.assert_close(module.network.tag_layer(module.network.embed(x)), module(x), rtol=0, atol=0)


def test_the_toy_networks_summary(toy_model, capsys):
    assert run.main(["--model", "toy_net", "--summary", "--width", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("toy_net (a test's toy network): input (32, 455), 2 segment(s)")
    total = next(line for line in out.splitlines() if line.startswith("Total params")).split()
    assert total[-2] == f"{32 * 4 * 3 + 4 + 2 * 4 + 4 * 50 + 50:,}"  # conv + BN (gamma, beta) + dense


@pytest.mark.slow
def test_the_toy_network_sweeps_with_the_default_space(toy_model, tiny_cache, tmp_path, capsys):
    from sweeps.storage import SweepSettings, open_storage, parse_storage

    argv = ["--sweep", "toy_net", *tiny_cache.args(), "--trials", "2", "--max-epochs", "1", "--pruner", "none",
            "--logger", "none", "--study-name", "toy", "--runs-root", str(tmp_path)]
    with one_torch_thread():
        assert run.main(argv) == 0
    err = capsys.readouterr().err
    # the default space of a model without its own; on the stand-in the plan fixes the optimiser and its rate
    assert "space    hop_length in [256, 512, 1024]; n_mels in [32, 64, 96, 128]" in err
    assert "--optimizer adam (otherwise sgd)" in err and "--lr 0.001 (otherwise 0.01)" in err
    target = parse_storage(None, tmp_path / "sweeps" / "toy")
    study = optuna.load_study(study_name="toy", storage=open_storage(target, SweepSettings()))
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2
    # the first trial is the entry's own settings (the default baseline) with the paper recipe's decay; the rate is the
    # stand-in plan's fixed one
    assert trials[0].params == {"hop_length": 512, "n_mels": 32, "dropout": 0.1, "global_decay": 0.2}
    assert json.loads((tmp_path / "sweeps" / "toy" / "best_params.json").read_text())["counts"]["COMPLETE"] == 2


@pytest.mark.slow
def test_the_toy_network_tags_audio_from_its_checkpoint(toy_run, tmp_path, capsys):
    song = tmp_path / "song.wav"
    sf.write(song, (0.1 * np.random.default_rng(0).standard_normal(5 * 22_050)).astype(np.float32), 22_050)
    capsys.readouterr()
    assert run.main(["--tag", str(song), "--checkpoint", str(toy_run), "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    [entry] = report["files"]
    assert len(entry["scores"]) == len(report["tags"]) > 0
    assert all(0.0 <= s <= 1.0 and math.isfinite(s) for s in entry["scores"].values())


def test_no_other_code_names_the_toy_network():
    """One file and one registry entry: nothing else in the repository's code knows this network."""
    this = REPO_ROOT / "tests" / "integration" / "test_toy_network.py"
    others = [path for path in REPO_ROOT.rglob("*.py")
              if path != this and ".venv" not in path.parts and ("ToyNet" in path.read_text(errors="replace")
                                                                 or "toy_net" in path.read_text(errors="replace"))]
    assert not others
