"""The model registry (lightning_modules/registry.py): the only list of models, and what follows from it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from datamodules.mel_config import MelConfig
from infrastructure.errors import ConfigError
from lightning_modules import architectures
from lightning_modules.registry import (
    MODELS,
    ModelSpec,
    build_network,
    model_spec,
    network_config,
    register,
    unregister,
)
from sweeps.spaces import BASELINES, SPACES, baseline_points, default_space_values, space_of
from tests.support.paths import REPO_ROOT


@pytest.mark.slow  # a subprocess (the suite's rule for what runs in the fast part)
def test_the_registry_and_the_mel_settings_import_without_torch():
    """run.py's command line reads the registry; importing it must not cost torch's import."""
    code = ("import sys; import lightning_modules.registry, datamodules.mel_config; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_one_look_up_names_the_closest_model():
    assert model_spec("mel_cnn") is MODELS["mel_cnn"]
    with pytest.raises(ConfigError, match=r"^unknown model 'mel_cn'; did you mean mel_cnn\? \(known: sample_cnn, "):
        model_spec("mel_cn")
    with pytest.raises(ConfigError, match=r"^unknown model 'resnet50' \(known: .*tagging_transformer\)$"):
        model_spec("resnet50")
    for look_up in (architectures.module_class, architectures.default_hparams, space_of):
        with pytest.raises(ConfigError, match="did you mean lstm_mel"):
            look_up("lstm_mle")


def _copy_of_mel_cnn(**changes) -> ModelSpec:
    values = dict(name="mel_cnn_copy", table="a copy of Table 2's model", network=MODELS["mel_cnn"].network,
                  frontend=MelConfig(n_fft=1024, hop_length=512, n_mels=64), segments_per_clip=1, train_crop="fixed",
                  batch_size=8, network_defaults=(("dropout", 0.2),))
    return ModelSpec(**{**values, **changes})


@pytest.fixture
def registered_copy():
    spec = register(_copy_of_mel_cnn())
    yield spec
    if spec.name in MODELS:
        unregister(spec.name)


def test_a_registered_model_gets_a_module_class_a_default_space_and_a_baseline(registered_copy):
    assert list(MODELS)[-1] == "mel_cnn_copy"  # registration order
    cls = architectures.module_class("mel_cnn_copy")
    assert cls.__name__ == "MelCnnCopyModule" and cls.MODEL == "mel_cnn_copy"
    assert architectures.MODULES["mel_cnn_copy"] is cls and architectures.MelCnnCopyModule is cls
    assert "MelCnnCopyModule" in dir(architectures)
    module = cls()  # the entry's defaults: 29.1 s MTAT clips, 50 tags
    assert module.hparams.network_config["kwargs"]["n_mels"] == 64 and module.hparams.frontend["hop_length"] == 512
    # its sweep: the default Mel space (half, own and double hop; 64/96/128 bands), with its own settings first
    space = SPACES["mel_cnn_copy"]
    assert space.names == ("hop_length", "n_mels", "lr", "dropout", "global_decay")
    assert space.get("hop_length").choices == (256, 512, 1024) and space.get("n_mels").choices == (64, 96, 128)
    assert space.get("dropout").choices == (0.2, 0.25, 0.5)
    assert BASELINES["mel_cnn_copy"] == ({"hop_length": 512, "n_mels": 64, "dropout": 0.2},)

    unregister("mel_cnn_copy")
    assert "mel_cnn_copy" not in MODELS and "mel_cnn_copy" not in architectures.MODULES
    assert "mel_cnn_copy" not in SPACES
    with pytest.raises(AttributeError):
        architectures.MelCnnCopyModule  # noqa: B018


def test_register_refuses_a_taken_name_or_class_and_bad_entries(registered_copy):
    with pytest.raises(ConfigError, match="'mel_cnn_copy' is registered already"):
        register(_copy_of_mel_cnn())
    with pytest.raises(ConfigError, match="module class name MelCNNModule is taken by mel_cnn"):
        register(_copy_of_mel_cnn(name="other", module="MelCNNModule"))
    with pytest.raises(ConfigError, match="network class MelCNN is lightning_modules.networks.mel_cnn:MelCNN already"):
        register(_copy_of_mel_cnn(name="other", network="somewhere.else:MelCNN"))
    for changes, message in [({"name": "Mel-CNN"}, "lower-case"), ({"network": "MelCNN"}, "not an import path"),
                             ({"train_crop": "middle"}, "train_crop 'middle'"), ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(ConfigError, match=message):
            _copy_of_mel_cnn(**changes)
    with pytest.raises(TypeError):
        ModelSpec("mel_cnn", "Table 2")  # keyword fields only


def test_a_network_that_cannot_be_imported_or_built_is_one_clear_error():
    spec = _copy_of_mel_cnn(name="missing", network="lightning_modules.networks.nowhere:Net")
    with pytest.raises(ConfigError, match="model missing: cannot import its network lightning_modules.networks.nowhere"):
        spec.network_class()
    config = network_config(MODELS["mel_cnn"], (96, 116), 10)
    with pytest.raises(ConfigError, match="network MelCNN takes no argument depth"):
        build_network({**config, "kwargs": {**config["kwargs"], "depth": 3}})
    with pytest.raises(ConfigError, match="unknown network 'VGG'"):
        build_network({"name": "vgg", "class": "VGG", "kwargs": {}})


def test_the_small_variant_replaces_only_what_its_entry_names():
    fcn = MODELS["fcn"]
    small = fcn.small_variant()
    assert small.network_defaults == (("dropout", 0.5), ("pools", [[2, 2]] * 5))
    assert dataclasses.replace(small, network_defaults=fcn.network_defaults) == fcn
    assert MODELS["mel_cnn"].small_variant() is MODELS["mel_cnn"]


def test_the_registry_literals_match_the_networks_constants():
    """The registry imports no network module; its copies of their constants must agree with them."""
    from lightning_modules.networks import harmonic_cnn, sample_cnn, sample_cnn_se, short_chunk, tagging_transformer

    defaults = {name: dict(spec.network_defaults) for name, spec in MODELS.items()}
    assert defaults["sample_cnn"]["block_channels"] == list(sample_cnn.WHOLE_CLIP_CHANNELS)
    assert defaults["sample_cnn_frames"]["block_channels"] == list(sample_cnn.FRAME_CHANNELS)
    assert MODELS["sample_cnn_frames"].frame_samples == sample_cnn.FRAME_SAMPLES
    assert MODELS["sample_cnn_se"].frame_samples == sample_cnn_se.SEGMENT_SAMPLES
    assert MODELS["short_chunk_cnn"].frame_samples == MODELS["short_chunk_resnet"].frame_samples == \
        short_chunk.CHUNK_SAMPLES
    assert MODELS["harmonic_cnn"].frame_samples == harmonic_cnn.CHUNK_SAMPLES
    assert MODELS["tagging_transformer"].frame_samples == tagging_transformer.CHUNK_SAMPLES


def test_every_model_has_a_sweep_space_and_waveform_models_share_the_default_one():
    assert list(SPACES) == list(MODELS)
    for name in ("sample_cnn", "sample_cnn_frames", "harmonic_cnn", "sample_cnn_se"):
        assert MODELS[name].space is None and SPACES[name].names == ("lr", "dropout", "global_decay"), name
        assert default_space_values(MODELS[name])[0] == ("lr", {"low": 1e-3, "high": 1e-1, "log": True})
    assert baseline_points("fcn") == () and baseline_points("sample_cnn_se") == ()
