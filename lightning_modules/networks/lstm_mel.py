"""Bidirectional LSTM + Conv1D on log-Mel spectrograms (Table 3 of the paper).

Input (batch, n_mels, n_frames) is read as a sequence of n_frames vectors of n_mels values.
Two stacked bidirectional LSTMs (100 units each way) return the whole sequence (time, 200);
three 1D convolutions (kernel 3, 50 filters, 'valid') follow, then dropout, flatten and a dense
layer to the tags. With 227 frames x 128 Mel: (227,200), (227,200), (225,50), (223,50), (221,50),
and 1,021,700 parameters in the paper's (Keras) count (one bias per LSTM gate).

Choices the paper leaves open, made here:
* a ReLU follows each 1D convolution (the paper names no activation);
* dropout sits before the dense layer ("the dropout rate on the dense level", no value given):
  default 0.0; it is applied to the last conv output before flattening, which is the same
  element-wise operation as dropout on the flattened vector;
* no dropout between the LSTM layers.

The LSTM is one ``nn.LSTM(batch_first=True, bidirectional=True, num_layers=2)`` so that cuDNN
runs the whole stack in one call. Returns logits (no sigmoid).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from infrastructure.errors import ConfigError
from lightning_modules.networks.args import check_dropout, check_int
from lightning_modules.networks.base import MelNetwork


class LSTMMel(MelNetwork):
    """BiLSTM + Conv1D: log-Mel (batch, n_mels, n_frames) -> tag logits (batch, n_tags).

    Layers: ``lstm`` (``num_layers`` stacked bidirectional LSTMs of ``hidden_size`` units,
    whole-sequence output), ``convs`` (``n_convs`` blocks of Conv1d(kernel_size, 'valid',
    ``conv_channels`` filters) + ReLU), ``dropout``, ``classifier`` (dense, sized from
    n_frames). Raises ConfigError when n_frames is too short for the convolutions.

    Attributes: ``n_mels``, ``n_frames``, ``n_tags``, ``input_shape`` ((n_mels, n_frames)),
    ``feature_shape`` ((time, features) entering the dense layer; the embedding is it flattened).
    """

    def __init__(self, n_mels: int, n_frames: int, n_tags: int, hidden_size: int = 100,
                 num_layers: int = 2, conv_channels: int = 50, n_convs: int = 3,
                 kernel_size: int = 3, dropout: float = 0.0, input_norm: bool = False) -> None:
        super().__init__()
        for option, value in (("n_mels", n_mels), ("n_frames", n_frames), ("n_tags", n_tags),
                              ("hidden_size", hidden_size), ("num_layers", num_layers),
                              ("conv_channels", conv_channels), ("kernel_size", kernel_size)):
            check_int("lstm_mel", option, value)
        check_int("lstm_mel", "n_convs", n_convs, minimum=0)
        check_dropout("lstm_mel", dropout)
        needed = n_convs * (kernel_size - 1) + 1
        if n_frames < needed:
            raise ConfigError(
                f"Mel settings give {n_frames} frames per segment; lstm_mel needs at least "
                f"{needed} ({n_convs} conv1d of kernel {kernel_size}, 'valid')")

        self.n_mels = n_mels
        self.n_frames = n_frames
        self.n_tags = n_tags
        # Not in Table 3: batch norm over the Mel bands of the log-Mel input. Raw dB values
        # (about -100 to +20) saturate the LSTM gates; the paper reports saturating weights.
        self.input_norm = nn.BatchNorm1d(n_mels) if input_norm else None
        self.lstm = nn.LSTM(input_size=n_mels, hidden_size=hidden_size, num_layers=num_layers,
                            batch_first=True, bidirectional=True)
        convs = []
        in_channels = 2 * hidden_size
        for _ in range(n_convs):
            convs.append(nn.Sequential(nn.Conv1d(in_channels, conv_channels, kernel_size),
                                       nn.ReLU(inplace=True)))
            in_channels = conv_channels
        self.convs = nn.Sequential(*convs)
        self.dropout = nn.Dropout(dropout)
        length = n_frames - n_convs * (kernel_size - 1)
        self.feature_shape = (length, in_channels)
        self.classifier = nn.Linear(length * in_channels, n_tags)

    def paper_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """The layers of Table 3 in forward order, as (display name, module) pairs.

        The LSTM is one module; ``layer_summary`` splits it into one row per layer.
        """
        if self.input_norm is not None:
            yield "input batch norm", self.input_norm
        yield f"bi-LSTM({self.lstm.hidden_size})", self.lstm
        for conv in self.convs:
            yield f"conv {conv[0].kernel_size[0]} - {conv[0].out_channels}", conv
        yield f"dropout {self.dropout.p:g}", self.dropout
        yield f"dense {self.n_tags}", self.classifier

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """The flattened last conv output (batch, channels * time') for a log-Mel batch."""
        if self.input_norm is not None:
            mel = self.input_norm(mel)
        sequence, _ = self.lstm(mel.transpose(1, 2))   # (batch, time, 2 * hidden)
        return torch.flatten(self.convs(sequence.transpose(1, 2)), 1)  # convs: (batch, channels, time')

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Dropout on the (channels, time') map, as Table 3's rows show it, then the dense layer."""
        length, channels = self.feature_shape
        return self.classifier(torch.flatten(self.dropout(embedding.unflatten(1, (channels, length))), 1))
