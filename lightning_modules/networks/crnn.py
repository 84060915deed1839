"""CRNN: convolutional recurrent tagger of Choi, Fazekas, Sandler & Cho 2017 ("Convolutional
recurrent neural networks for music classification").

Input (batch, n_mels, n_frames) log-Mel. A batch norm over the one input channel; four blocks of
conv 3x3 ('same', bias) + BatchNorm + ReLU + max-pool (2,2) (3,3) (4,4) (4,4), which take 96 Mel
bands down to 1; the remaining (time, channels) sequence goes through a two-layer GRU, whose last
time step, after dropout, feeds a dense layer to the tags.

Settings and where they come from:

* Channels 64-128-128-128 and GRU 32-32 are those of the authors' Keras code
  (keunwoochoi/music-auto_tagging-keras, ``music_tagger_crnn.py``) and of Won et al. 2020's
  reimplementation (0.8722 ROC-AUC in their table); the paper sweeps widths for parameter budgets
  of 0.1 M to 3 M, all configurable here through ``channels`` and ``gru_hidden``.
* Input: the whole 29.1 s clip. The paper uses 12 kHz, 96 Mel bands, n_fft 512, hop 256
  (96 x 1366); at the suite's 16 kHz the same 96 bands, n_fft and hop give 1,821 frames (Won does
  the same), so the GRU reads 1821 // 96 = 18 steps of 128 features (15 in the paper's padded
  96 x 1440 input).
* ReLU (Won) rather than the paper's ELU; dropout 0.5 before the dense layer (Won; Choi's Keras
  code has 0.1 after each conv block and 0.3 before the output).
* When the pools leave more than one Mel row (more than 96 bands), the rows are stacked into the
  GRU's input features.

A GRU's count differs between frameworks: PyTorch keeps two bias vectors per gate (``bias_ih`` and
``bias_hh``), Keras (``reset_after=False``, the papers' version) one; ``--summary`` shows both.
Returns logits (no sigmoid).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from lightning_modules.networks.args import check_channels, check_dropout, check_int
from lightning_modules.networks.base import MelNetwork
from lightning_modules.networks.fcn import (
    _check_pools,
    check_pooled_input,
    conv_pool_blocks,
    conv_pool_layers,
    pooled_size,
)

CRNN_CHANNELS: tuple[int, ...] = (64, 128, 128, 128)
"""Conv channels of the authors' Keras CRNN and of Won's reimplementation."""

CRNN_POOLS: tuple[tuple[int, int], ...] = ((2, 2), (3, 3), (4, 4), (4, 4))
"""Max-pool sizes (Mel, time) of the four conv blocks (the paper's)."""


class CRNN(MelNetwork):
    """Conv + GRU: log-Mel (batch, n_mels, n_frames) -> tag logits (batch, n_tags).

    Layers: ``input_norm`` (BatchNorm2d, one channel), ``blocks`` (``conv`` = conv 3x3 + BN +
    ReLU, ``pool``), ``gru`` (``gru_layers`` stacked GRUs of ``gru_hidden`` units, batch first),
    ``dropout``, ``classifier`` (dense from the GRU's last time step).

    Attributes: ``n_mels``, ``n_frames``, ``n_tags``, ``input_shape``, ``sequence_shape`` ((steps,
    features) entering the GRU).
    """

    def __init__(self, n_mels: int, n_frames: int, n_tags: int, channels: Sequence[int] = CRNN_CHANNELS,
                 pools: Sequence[Sequence[int]] = CRNN_POOLS, gru_hidden: int = 32, gru_layers: int = 2,
                 dropout: float = 0.5) -> None:
        super().__init__()
        for option, value in (("n_mels", n_mels), ("n_frames", n_frames), ("n_tags", n_tags),
                              ("gru_hidden", gru_hidden), ("gru_layers", gru_layers)):
            check_int("crnn", option, value)
        channels = check_channels("crnn", "channels", channels)
        pools = _check_pools("crnn", pools, len(channels))
        check_dropout("crnn", dropout)
        check_pooled_input("crnn", n_mels, n_frames, pools)

        self.n_mels, self.n_frames, self.n_tags = n_mels, n_frames, n_tags
        self.input_norm = nn.BatchNorm2d(1)
        self.blocks = conv_pool_blocks(channels, pools)
        in_channels = channels[-1]
        height = pooled_size(n_mels, [p[0] for p in pools])
        steps = pooled_size(n_frames, [p[1] for p in pools])
        self.sequence_shape = (steps, height * in_channels)
        self.gru = nn.GRU(height * in_channels, gru_hidden, num_layers=gru_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(gru_hidden, n_tags)

    def paper_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """The layers in forward order, as (display name, module) pairs (for ``--summary``)."""
        yield "input batch norm", self.input_norm
        yield from conv_pool_layers(self.blocks)
        yield f"GRU({self.gru.hidden_size})", self.gru
        yield f"dropout {self.dropout.p:g}", self.dropout
        yield f"dense {self.n_tags}", self.classifier

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """The GRU's last time step (batch, gru_hidden) for a log-Mel batch."""
        x = self.blocks(self.input_norm(mel.unsqueeze(1)))      # (batch, channels, mel', steps)
        sequence = x.flatten(1, 2).transpose(1, 2)              # (batch, steps, channels * mel')
        outputs, _ = self.gru(sequence)
        return outputs[:, -1]

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(embedding))
