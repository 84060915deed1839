"""The interface every network shares (lightning_modules/networks/base.py): input check, embedding, tag layer."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.architectures import default_hparams
from lightning_modules.networks.base import MelNetwork, TaggingNetwork, WaveformNetwork
from lightning_modules.registry import MODELS, build_network, model_spec
from tests.support.helpers import one_torch_thread
from tests.support.network_fingerprints import small_setup

EMBEDDING_DIMS = {
    # D of each model's default network on MTAT clips: the input of its final tag layer
    "sample_cnn": 23 * 512,           # the last map, 23 steps x 512 channels, flattened (Table 1)
    "sample_cnn_frames": 512,         # 1 step x 512 channels after the 1x1 conv
    "mel_cnn": 6 * 14 * 64,           # the last map flattened (Table 2)
    "lstm_mel": 221 * 50,             # the last conv1d's 221 steps x 50 filters flattened (Table 3)
    "fcn": 64,                        # 1 x 1 x 64 after the five pools
    "crnn": 32,                       # the GRU's last step
    "musicnn": 200,                   # the back-end's dense layer after its batch norm
    "sample_cnn_se": 1024,            # the dense layer over the three aggregated levels
    "short_chunk_cnn": 512,           # Won's dense 4w + BN + ReLU
    "short_chunk_resnet": 512,
    "harmonic_cnn": 256,              # dense 2w + BN + ReLU
    "tagging_transformer": 256,       # the layer-normed [CLS] output
}


@pytest.mark.parametrize("name", EMBEDDING_DIMS)
def test_every_network_has_its_embedding_dimension_and_a_tag_layer(name):
    with torch.device("meta"):
        network = build_network(default_hparams(name)["network_config"])
    assert isinstance(network, TaggingNetwork)
    assert isinstance(network, MelNetwork if model_spec(name).frontend is not None else WaveformNetwork)
    assert network.embedding_dim == EMBEDDING_DIMS[name]
    assert network.tag_layer.in_features == EMBEDDING_DIMS[name] and network.tag_layer.out_features == 50


@pytest.mark.parametrize("name", list(MODELS))
def test_the_tag_layer_applied_to_the_embedding_gives_the_logits(name):
    """On each model's CPU-sized network: embed() is (batch, D); in evaluation the final layer of embed(x) is
    forward(x); in training classify(embed(x)) draws the same dropout as forward(x) under the same seed."""
    config, shape = small_setup(name)
    torch.manual_seed(0)
    network = build_network(config)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    x = x * 20 - 40 if len(shape) == 2 else x * 0.1
    network.eval()
    with one_torch_thread(), torch.no_grad():
        embedding = network.embed(x)
        assert embedding.shape == (3, network.embedding_dim)
        torch.testing.assert_close(network.tag_layer(embedding), network(x), rtol=0, atol=0)
        torch.testing.assert_close(network.embed(x[:1]), embedding[:1], rtol=1e-5, atol=1e-5)  # per example
    network.train()
    with one_torch_thread():
        torch.manual_seed(2)
        logits = network(x)
        torch.manual_seed(2)
        torch.testing.assert_close(network.classify(network.embed(x)), logits, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_wrong_input_shape_is_refused_by_forward_and_embed(name):
    config, shape = small_setup(name)
    network = build_network(config)
    bad = torch.zeros(2, *shape[:-1], shape[-1] + 1)
    expected = f"(batch, {', '.join(map(str, shape))}), got {tuple(bad.shape)}"
    for method in (network, network.embed):
        with pytest.raises(ValueError, match=r"expects input of shape") as info:
            method(bad)
        assert expected in str(info.value)
    with pytest.raises(ValueError, match="expects input of shape"):
        network(torch.zeros(2, 1, *shape))  # an extra dimension
