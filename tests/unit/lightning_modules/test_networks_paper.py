"""Fidelity tests of the three networks against Tables 1-3 of the paper, and of the summary."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infrastructure.audio import MTAT_CLIP_SAMPLES
from infrastructure.errors import ConfigError
from lightning_modules.networks.lstm_mel import LSTMMel
from lightning_modules.networks.mel_cnn import MelCNN, min_input_size
from lightning_modules.networks.sample_cnn import FRAME_SAMPLES, SampleCNN
from lightning_modules.networks.summary import (
    LayerRow,
    format_summary,
    layer_summary,
    paper_parameter_count,
    torch_parameter_count,
)

N_TAGS = 50

# Rows of the paper's tables: (output shape in the paper's layout, Keras parameter count).
TABLE_1 = [  # SampleCNN, 465,984 samples
    ((155328, 128), 1024), ((155328, 128), 49792), ((51776, 128), 0),
    ((51776, 256), 99584), ((17258, 256), 0),
    ((17258, 256), 197888), ((5752, 256), 0),
    ((5752, 256), 197888), ((1917, 256), 0),
    ((1917, 256), 197888), ((639, 256), 0),
    ((639, 256), 197888), ((213, 256), 0),
    ((213, 256), 197888), ((71, 256), 0),
    ((71, 512), 395776), ((23, 512), 0),
    ((23, 512), 0),  # dropout 0.5
    ((50,), 588850),  # dense (the table prints it on the dropout row)
]
TABLE_2 = [  # Mel CNN, 128 Mel x 261 frames; first row 126x259x32 (misprinted 126x256x32)
    ((126, 259, 32), 448), ((63, 129, 32), 0), ((63, 129, 32), 0),
    ((61, 127, 64), 18752), ((30, 63, 64), 0), ((30, 63, 64), 0),
    ((28, 61, 64), 37184), ((14, 30, 64), 0), ((14, 30, 64), 0),
    ((12, 28, 64), 37184), ((6, 14, 64), 0), ((6, 14, 64), 0),
    ((50,), 268850),
]
TABLE_3 = [  # BiLSTM + Conv1D, 227 frames x 128 Mel
    ((227, 200), 183200), ((227, 200), 240800),
    ((225, 50), 30050), ((223, 50), 7550), ((221, 50), 7550),
    ((221, 50), 0),  # dropout
    ((50,), 552550),
]


def _check_against_table(rows: list[LayerRow], table: list, total: int) -> None:
    assert [(r.output_shape, r.paper_params) for r in rows] == table
    assert sum(r.paper_params for r in rows) == total


def _pytorch_count(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


# ---------------------------------------------------------------- paper fidelity


def test_mel_cnn_matches_table_2():
    net = MelCNN(128, 261, N_TAGS)
    rows = layer_summary(net, (128, 261))
    _check_against_table(rows, TABLE_2, 362_418)
    assert paper_parameter_count(net) == 362_418
    # PyTorch keeps BN running stats as buffers: 2 per channel fewer than Keras.
    assert torch_parameter_count(net) == _pytorch_count(net) == 362_418 - 2 * (32 + 64 + 64 + 64)
    assert sum(r.torch_params for r in rows) == torch_parameter_count(net)
    assert [r.name for r in rows[:3]] == ["conv (3,3) - 32", "maxpool (2,2)", "dropout 0.1"]
    assert rows[0].kind == "Conv2d+BatchNorm2d+ReLU"
    assert net.feature_shape == (6, 14, 64)


def test_lstm_mel_matches_table_3():
    net = LSTMMel(128, 227, N_TAGS)
    rows = layer_summary(net, (128, 227))
    _check_against_table(rows, TABLE_3, 1_021_700)
    assert paper_parameter_count(net) == 1_021_700
    # PyTorch's LSTM has two biases per gate: 4 * 100 more per layer and direction.
    assert torch_parameter_count(net) == _pytorch_count(net) == 1_021_700 + 2 * 2 * 400
    assert [r.torch_params for r in rows[:2]] == [183_200 + 800, 240_800 + 800]
    assert rows[0].name.startswith("bi-LSTM(100)") and rows[0].kind == "LSTM"
    assert rows[2].kind == "Conv1d+ReLU"
    lstm = net.lstm
    assert (lstm.batch_first, lstm.bidirectional, lstm.num_layers) == (True, True, 2)


def test_sample_cnn_whole_clip_matches_table_1():
    net = SampleCNN.whole_clip(MTAT_CLIP_SAMPLES, N_TAGS)
    rows = layer_summary(net)
    _check_against_table(rows, TABLE_1, 2_124_466)
    assert paper_parameter_count(net) == 2_124_466
    bn_channels = 128 + 128 + 6 * 256 + 512
    assert torch_parameter_count(net) == _pytorch_count(net) == 2_124_466 - 2 * bn_channels
    assert net.lengths == (155328, 51776, 17258, 5752, 1917, 639, 213, 71, 23)
    assert rows[0].name == "conv 3 - 128 (stride 3)"
    assert net.dropout.p == 0.5


def test_sample_cnn_frame_variant_shapes():
    net = SampleCNN.frames(N_TAGS)
    assert net.input_shape == (FRAME_SAMPLES,) == (59049,)
    assert net.lengths == (19683, 6561, 2187, 729, 243, 81, 27, 9, 3, 1)
    rows = layer_summary(net)
    shapes = [r.output_shape for r in rows]
    assert shapes[-4:] == [(1, 512), (1, 512), (1, 512), (N_TAGS,)]  # pool, conv 1-512, dropout, dense
    assert rows[-3].name == "conv 1 - 512"
    channels = [s[1] for r, s in zip(rows, shapes) if r.name.startswith("conv 3")]
    assert channels == [128, 128, 128, 256, 256, 256, 256, 256, 256, 512]
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, FRAME_SAMPLES)).shape == (2, N_TAGS)


# ---------------------------------------------------------------- forward and backward


def _logits_are_classifier_output(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Runs net(x), checking that the output is the dense layer's raw output (no sigmoid)."""
    seen = {}
    handle = net.classifier.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    try:
        logits = net(x)
    finally:
        handle.remove()
    assert logits is seen["out"]
    return logits


@pytest.mark.parametrize("make", [
    lambda: MelCNN(128, 261, N_TAGS),
    lambda: LSTMMel(128, 227, N_TAGS),
    # About 5 s alone on 2 cores, 15 s when the machine is shared.
    pytest.param(lambda: SampleCNN.whole_clip(MTAT_CLIP_SAMPLES, N_TAGS), marks=pytest.mark.slow),
], ids=["mel_cnn", "lstm_mel", "sample_cnn_whole_clip"])
def test_forward_backward_at_paper_sizes(make):
    torch.manual_seed(0)
    net = make()
    net.train()
    x = torch.randn(2, *net.input_shape)
    logits = _logits_are_classifier_output(net, x)
    assert logits.shape == (2, N_TAGS)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("make", [
    lambda: MelCNN(96, 100, N_TAGS),
    lambda: LSTMMel(40, 30, N_TAGS, hidden_size=16),
], ids=["mel_cnn", "lstm_mel"])
def test_examples_are_independent_in_eval_mode(make):
    torch.manual_seed(0)
    net = make().eval()
    x = torch.randn(3, *net.input_shape)
    with torch.no_grad():
        batch = net(x)
        single = torch.cat([net(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- sizes follow the input


def test_dense_sizes_follow_mel_settings():
    net = MelCNN(96, 188, 10)
    h, w = 96, 188
    for _ in range(4):
        h, w = (h - 2) // 2, (w - 2) // 2
    assert net.feature_shape == (h, w, 64) == (4, 9, 64)
    assert net.classifier.in_features == 4 * 9 * 64
    assert net(torch.randn(2, 96, 188)).shape == (2, 10)

    lstm = LSTMMel(96, 50, 10, hidden_size=32, n_convs=2, kernel_size=5, conv_channels=8)
    assert lstm.feature_shape == (50 - 2 * 4, 8)
    assert lstm.classifier.in_features == 42 * 8
    assert lstm(torch.randn(2, 96, 50)).shape == (2, 10)


def test_sample_cnn_blocks_follow_block_channels():
    net = SampleCNN(FRAME_SAMPLES, 7, block_channels=(16, 32, 32), first_channels=8)
    assert len(net.blocks) == 3
    assert net.lengths == (19683, 6561, 2187, 729)
    assert net.classifier.in_features == 729 * 32
    assert net(torch.randn(2, FRAME_SAMPLES)).shape == (2, 7)


# ---------------------------------------------------------------- errors


def test_too_small_inputs_raise_config_error():
    assert min_input_size(4) == 46
    with pytest.raises(ConfigError, match=r"33 frames per segment; mel_cnn needs at least 46 "
                                          r"\(4 conv3\+pool2 blocks\)"):
        MelCNN(128, 33, N_TAGS)
    with pytest.raises(ConfigError, match="45 frames"):
        MelCNN(128, 45, N_TAGS)
    with pytest.raises(ConfigError, match="40 Mel bands; mel_cnn needs at least 46"):
        MelCNN(40, 261, N_TAGS)
    with pytest.raises(ConfigError, match=r"6 frames per segment; lstm_mel needs at least 7"):
        LSTMMel(128, 6, N_TAGS)
    with pytest.raises(ConfigError, match=r"19682 samples .* at least 19683"):
        SampleCNN.whole_clip(19682, N_TAGS)
    with pytest.raises(ConfigError, match="at least 59049"):
        SampleCNN(FRAME_SAMPLES - 1, N_TAGS, block_channels=(8,) * 9, first_channels=8)


def test_smallest_accepted_inputs_run():
    assert MelCNN(46, 46, N_TAGS).eval()(torch.randn(1, 46, 46)).shape == (1, N_TAGS)
    assert LSTMMel(8, 7, N_TAGS, hidden_size=4)(torch.randn(1, 8, 7)).shape == (1, N_TAGS)
    net = SampleCNN(19683, N_TAGS, block_channels=(4,) * 8, first_channels=4).eval()
    assert net.lengths[-1] == 1
    assert net(torch.randn(1, 19683)).shape == (1, N_TAGS)


@pytest.mark.parametrize("make", [
    lambda: MelCNN(128, 261, 0),
    lambda: MelCNN(128, 261, N_TAGS, channels=()),
    lambda: MelCNN(128, 261, N_TAGS, dropout=1.0),
    lambda: LSTMMel(128, 227, N_TAGS, hidden_size=0),
    lambda: LSTMMel(128, 227, N_TAGS, dropout=-0.1),
    lambda: SampleCNN(MTAT_CLIP_SAMPLES, N_TAGS, block_channels=()),
    lambda: SampleCNN(MTAT_CLIP_SAMPLES, N_TAGS, first_channels=0),
    lambda: SampleCNN(float(MTAT_CLIP_SAMPLES), N_TAGS),
], ids=["mel_tags", "mel_channels", "mel_dropout", "lstm_hidden", "lstm_dropout",
        "sample_blocks", "sample_first", "sample_float"])
def test_bad_options_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


@pytest.mark.parametrize("net, bad, expected", [
    (MelCNN(128, 261, N_TAGS), (2, 261, 128), "(batch, 128, 261)"),
    (MelCNN(128, 261, N_TAGS), (2, 1, 128, 261), "(batch, 128, 261)"),
    (LSTMMel(128, 227, N_TAGS), (2, 128, 226), "(batch, 128, 227)"),
    (SampleCNN.frames(N_TAGS), (2, 1, FRAME_SAMPLES), f"(batch, {FRAME_SAMPLES})"),
    (SampleCNN.frames(N_TAGS), (2, FRAME_SAMPLES + 1), f"(batch, {FRAME_SAMPLES})"),
], ids=["mel_transposed", "mel_4d", "lstm_frames", "sample_3d", "sample_length"])
def test_wrong_input_shape_raises_value_error(net, bad, expected):
    with pytest.raises(ValueError) as info:
        net(torch.zeros(bad))
    assert expected in str(info.value)
    assert str(bad) in str(info.value)


# ---------------------------------------------------------------- summary


def test_format_summary_prints_table_and_totals():
    net = MelCNN(128, 261, N_TAGS)
    text = format_summary(layer_summary(net), "Mel CNN (128, 261)")
    lines = text.splitlines()
    assert lines[0] == "Mel CNN (128, 261)"
    assert "# params (PyTorch)" in text and "# params (paper/Keras)" in text
    first = next(line for line in lines if line.startswith("conv (3,3) - 32"))
    assert first.split()[-3:] == ["126x259x32", "384", "448"]
    pool = next(line for line in lines if line.startswith("maxpool (2,2)"))
    assert pool.split()[-2:] == ["-", "-"]
    assert lines[-1].split() == ["Total", "params", "361,970", "362,418"]


def test_layer_summary_restores_mode_and_uses_eval():
    net = SampleCNN.frames(N_TAGS)  # 1x1 output: BN in train mode would fail on batch 1
    net.train()
    layer_summary(net)
    assert net.training
    net.eval()
    layer_summary(net)
    assert not net.training


def test_paper_count_includes_frozen_parameters():
    net = MelCNN(128, 261, N_TAGS)
    for p in net.blocks[0].parameters():
        p.requires_grad_(False)
    assert paper_parameter_count(net) == 362_418
    assert torch_parameter_count(net) == 361_970 - (288 + 32 + 64)
    assert layer_summary(net)[0].torch_params == 0


def test_layer_summary_rejects_incomplete_paper_layers():
    class Incomplete(MelCNN):
        def paper_layers(self):
            yield from list(super().paper_layers())[:-1]  # leaves out the dense layer

    with pytest.raises(RuntimeError, match="every parameter"):
        layer_summary(Incomplete(128, 261, N_TAGS))


def test_layer_summary_keeps_single_layer_lstm_as_one_row():
    net = LSTMMel(20, 10, 5, hidden_size=8, num_layers=1, n_convs=1)
    rows = layer_summary(net)
    assert rows[0].name == "bi-LSTM(8)"
    assert rows[0].output_shape == (10, 16)
    assert rows[0].paper_params == 2 * 4 * (8 * (20 + 8) + 8)
    assert rows[1].output_shape == (8, 50)
