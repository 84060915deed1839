"""SampleCNN with squeeze-and-excitation and multi-level feature aggregation (Kim, Lee & Nam
2018, "Sample-level CNN architectures for music auto-tagging using raw waveforms": the "SE +
multi" model, 0.9111 ROC-AUC on MTAT in the authors' release).

Input (batch, 59049) raw waveform (3^10 samples). Layers, as in the authors' Keras code
(tae-jun/resemul, ``model.py``, block type ``se``):

* stem: conv 3, stride 3, 128 filters + BatchNorm + ReLU (19,683 steps);
* nine SE blocks, channels 128, 128, 256 x 6, 512: conv 3 'same' + BatchNorm + ReLU + max-pool 3,
  then squeeze-and-excitation on the pooled map: global average over time, dense
  ``amplifying_ratio`` x C + ReLU, dense C + sigmoid, the map scaled channel by channel. The SE
  dense layer *widens* by the amplifying ratio (16, the paper's; SENets narrow by a reduction
  ratio instead), which is why the SE layers hold most of the 24.7 M parameters;
* multi-level aggregation: global max over time of the last three blocks' outputs, concatenated
  (256 + 256 + 512 = 1,024 features; ``aggregate_last=1`` uses the last block only, the paper's
  "no multi" variant);
* dense 1,024 + BatchNorm + ReLU, dropout 0.5, dense to the tags.

Parameters with 50 tags: 24,749,618 in the Keras count (batch norm moving statistics included),
24,742,706 trainable in PyTorch. The authors resampled MTAT to 22,050 Hz (59,049 samples =
2.7 s); the suite's MTAT is 16 kHz, so a segment is 3.69 s, as in Won et al. 2020. Returns logits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from infrastructure.errors import ConfigError
from lightning_modules.networks.args import check_channels, check_dropout, check_int
from lightning_modules.networks.base import WaveformNetwork

SE_CHANNELS: tuple[int, ...] = (128, 128, 256, 256, 256, 256, 256, 256, 512)
"""Channels of the nine SE blocks (Kim et al. 2018; the 3^9 SampleCNN's)."""

SEGMENT_SAMPLES = 59_049
"""3^10 samples: the stride-3 stem and nine pool-3 blocks leave one step."""


class SqueezeExcitation(nn.Module):
    """Channel gates from the time-averaged map: x * sigmoid(W2 relu(W1 mean_t(x))), W1 widening by ``ratio``."""

    def __init__(self, channels: int, ratio: int) -> None:
        super().__init__()
        self.excite = nn.Sequential(nn.Linear(channels, channels * ratio), nn.ReLU(inplace=True),
                                    nn.Linear(channels * ratio, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.excite(x.mean(dim=2)).unsqueeze(2)


class SampleCNNSE(WaveformNetwork):
    """SampleCNN + SE + multi-level aggregation: waveform (batch, n_samples) -> tag logits (batch, n_tags).

    Layers: ``stem`` (conv 3 stride 3 + BN + ReLU), ``blocks`` (``conv`` = conv 3 + BN + ReLU,
    ``pool`` = max-pool 3, ``se``), ``head`` (dense + BN + ReLU on the aggregated features),
    ``dropout``, ``classifier``. Raises ConfigError when ``n_samples`` is shorter than 3^(blocks+1).

    Attributes: ``n_samples``, ``n_tags``, ``input_shape``, ``lengths`` (steps after the stem and
    each block), ``aggregated_features``.
    """

    def __init__(self, n_samples: int, n_tags: int, block_channels: Sequence[int] = SE_CHANNELS,
                 first_channels: int = 128, amplifying_ratio: int = 16, aggregate_last: int = 3,
                 dropout: float = 0.5) -> None:
        super().__init__()
        for option, value in (("n_samples", n_samples), ("n_tags", n_tags), ("first_channels", first_channels),
                              ("amplifying_ratio", amplifying_ratio), ("aggregate_last", aggregate_last)):
            check_int("sample_cnn_se", option, value)
        block_channels = check_channels("sample_cnn_se", "block_channels", block_channels)
        check_dropout("sample_cnn_se", dropout)
        n_blocks = len(block_channels)
        if aggregate_last > n_blocks:
            raise ConfigError(f"sample_cnn_se: aggregate_last ({aggregate_last}) exceeds the {n_blocks} blocks")
        min_samples = 3 ** (n_blocks + 1)
        if n_samples < min_samples:
            raise ConfigError(
                f"sample_cnn_se: segments of {n_samples} samples are too short; the network needs at least "
                f"{min_samples} (3^{n_blocks + 1}: a stride-3 conv and {n_blocks} conv3+maxpool3 blocks)")

        lengths = [(n_samples - 3) // 3 + 1]
        for _ in block_channels:
            lengths.append(lengths[-1] // 3)
        self.n_samples, self.n_tags = n_samples, n_tags
        self.lengths: tuple[int, ...] = tuple(lengths)
        self.aggregate_last = aggregate_last

        self.stem = nn.Sequential(nn.Conv1d(1, first_channels, 3, stride=3), nn.BatchNorm1d(first_channels),
                                  nn.ReLU(inplace=True))
        blocks = []
        in_channels = first_channels
        for channels in block_channels:
            blocks.append(nn.Sequential(OrderedDict(
                conv=nn.Sequential(nn.Conv1d(in_channels, channels, 3, padding=1), nn.BatchNorm1d(channels),
                                   nn.ReLU(inplace=True)),
                pool=nn.MaxPool1d(3),
                se=SqueezeExcitation(channels, amplifying_ratio),
            )))
            in_channels = channels
        self.blocks = nn.ModuleList(blocks)
        self.aggregated_features = sum(block_channels[-aggregate_last:])
        self.head = nn.Sequential(nn.Linear(self.aggregated_features, self.aggregated_features),
                                  nn.BatchNorm1d(self.aggregated_features), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.aggregated_features, n_tags)

    def paper_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """The layers in forward order, as (display name, module) pairs (for ``--summary``)."""
        yield f"conv 3 - {self.stem[0].out_channels} (stride 3)", self.stem
        for block in self.blocks:
            channels = block.conv[0].out_channels
            yield f"conv 3 - {channels}", block.conv
            yield "maxpool 3", block.pool
            yield f"SE ({block.se.excite[0].out_features} -> {channels})", block.se
        yield f"global max of last {self.aggregate_last} blocks, dense {self.aggregated_features}", self.head
        yield f"dropout {self.dropout.p:g}", self.dropout
        yield f"dense {self.n_tags}", self.classifier

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """The dense layer over the aggregated levels (batch, aggregated_features) for a waveform batch."""
        x = self.stem(waveform.unsqueeze(1))
        levels = []
        for block in self.blocks:
            x = block(x)
            levels.append(x.amax(dim=2))
        aggregated = torch.cat(levels[-self.aggregate_last:], dim=1)
        return self.head(aggregated)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(embedding))
