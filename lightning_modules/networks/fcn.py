"""FCN: the fully convolutional tagger of Choi, Fazekas & Sandler 2016 ("Automatic tagging using
deep convolutional neural networks"), as Won et al. 2020 reimplemented it for their benchmark.

Input (batch, n_mels, n_frames) log-Mel, read as a one-channel image (height = Mel bands, width =
time). A batch norm over the whole input (one channel, Won's ``spec_bn``) standardises the dB
values; then five blocks of conv 3x3 ('same' padding, bias) + BatchNorm + ReLU + max-pool, whose
pools shrink the paper-sized input to 1 x 1; dropout 0.5 and one dense layer to the tags.

Settings and where they come from:

* The paper: 29.1 s clips at 12 kHz, 96 Mel bands, n_fft 512, hop 256 (96 x 1366 frames). FCN-4
  has channels 128-384-768-2048 with pools (2,4) (4,5) (3,8) (4,8); FCN-5 (``FCN5_CHANNELS``,
  ``FCN5_POOLS``) has 128-256-512-1024-2048 with pools (2,4) (2,4) (2,4) (3,5) (4,4).
* This suite's MTAT is 16 kHz: like Won et al. 2020 we keep 96 Mel bands, n_fft 512 and hop 256,
  so 29.1 s give 1,821 frames (not 1,366) and the same five FCN-5 pools still end at 1 x 1
  (1821 -> 455 -> 113 -> 28 -> 5 -> 1; 96 -> 48 -> 24 -> 12 -> 4 -> 1).
* The default channels are Won's (64-128-128-128-64, ``WON_CHANNELS``; 447,732 PyTorch
  parameters with 50 tags): that is the FCN behind the 0.9005 ROC-AUC of Won et al.'s table.
  ``channels=FCN5_CHANNELS`` builds the paper's FCN-5 widths (25,183,028 PyTorch parameters).
* ReLU (Won) rather than the ELU of Choi's Keras code; dropout 0.5 before the dense layer (Won).

Inputs whose time or frequency extent is smaller than the product of the pools are refused with a
ConfigError; larger ones keep the leftover map and the dense layer grows to match. Returns logits.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from infrastructure.errors import ConfigError
from lightning_modules.networks.args import check_channels, check_dropout, check_int
from lightning_modules.networks.base import MelNetwork

WON_CHANNELS: tuple[int, ...] = (64, 128, 128, 128, 64)
"""Channels of Won et al. 2020's FCN (the suite's default)."""

FCN5_CHANNELS: tuple[int, ...] = (128, 256, 512, 1024, 2048)
"""Channels of the paper's FCN-5 (Choi et al. 2016, Table 1)."""

FCN5_POOLS: tuple[tuple[int, int], ...] = ((2, 4), (2, 4), (2, 4), (3, 5), (4, 4))
"""Max-pool sizes (Mel, time) of FCN-5, used by Won and by the suite."""


def _check_pools(model: str, pools: Sequence[Sequence[int]], n_blocks: int) -> tuple[tuple[int, int], ...]:
    pools = tuple(tuple(p) for p in pools)
    if len(pools) != n_blocks:
        raise ConfigError(f"{model}: pools must give one (mel, time) pair per block ({n_blocks}), got {len(pools)}")
    for pool in pools:
        if len(pool) != 2:
            raise ConfigError(f"{model}: each pool must be a (mel, time) pair, got {pool!r}")
        for size in pool:
            check_int(model, "pool size", size)
    return pools


def pooled_size(size: int, pools: Sequence[int]) -> int:
    """Size along one axis after 'same' convolutions and the given floor max-pools."""
    for pool in pools:
        size //= pool
    return size


def check_pooled_input(model: str, n_mels: int, n_frames: int, pools: Sequence[Sequence[int]]) -> None:
    """ConfigError unless (n_mels, n_frames) survives every pool with at least one cell left."""
    mel_needed = math.prod(p[0] for p in pools)
    time_needed = math.prod(p[1] for p in pools)
    if n_mels < mel_needed:
        raise ConfigError(f"Mel settings give {n_mels} Mel bands; {model} needs at least {mel_needed} "
                          f"(its max-pools {list(pools)})")
    if n_frames < time_needed:
        raise ConfigError(f"Mel settings give {n_frames} frames per segment; {model} needs at least {time_needed} "
                          f"(its max-pools {list(pools)}): use longer clips or a smaller --hop-length")


def conv_bn_relu_2d(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv2d 3x3 'same' (with bias, as Won) + BatchNorm2d + ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


def conv_pool_blocks(channels: Sequence[int], pools: Sequence[Sequence[int]]) -> nn.Sequential:
    """The conv stack FCN and CRNN share: per block ``conv`` (`conv_bn_relu_2d`) then ``pool`` (max-pool)."""
    blocks, in_channels = [], 1
    for c, pool in zip(channels, pools):
        blocks.append(nn.Sequential(OrderedDict(conv=conv_bn_relu_2d(in_channels, c), pool=nn.MaxPool2d(pool))))
        in_channels = c
    return nn.Sequential(*blocks)


def conv_pool_layers(blocks: nn.Sequential) -> Iterator[tuple[str, nn.Module]]:
    """`conv_pool_blocks`' layers as (display name, module) pairs, for ``--summary``."""
    for block in blocks:
        yield f"conv (3,3) - {block.conv[0].out_channels}", block.conv
        yield f"maxpool {tuple(block.pool.kernel_size)}", block.pool


class FCN(MelNetwork):
    """Fully convolutional network: log-Mel (batch, n_mels, n_frames) -> tag logits (batch, n_tags).

    Layers: ``input_norm`` (BatchNorm2d over the one input channel), ``blocks`` (one per entry of
    ``channels``: ``conv`` = conv 3x3 + BN + ReLU, ``pool`` = MaxPool2d of the matching entry of
    ``pools``), ``dropout``, ``classifier`` (dense from the flattened last map).

    Attributes: ``n_mels``, ``n_frames``, ``n_tags``, ``input_shape``, ``feature_shape`` ((mel,
    time, channels) entering the dense layer).
    """

    def __init__(self, n_mels: int, n_frames: int, n_tags: int, channels: Sequence[int] = WON_CHANNELS,
                 pools: Sequence[Sequence[int]] = FCN5_POOLS, dropout: float = 0.5) -> None:
        super().__init__()
        for option, value in (("n_mels", n_mels), ("n_frames", n_frames), ("n_tags", n_tags)):
            check_int("fcn", option, value)
        channels = check_channels("fcn", "channels", channels)
        pools = _check_pools("fcn", pools, len(channels))
        check_dropout("fcn", dropout)
        check_pooled_input("fcn", n_mels, n_frames, pools)

        self.n_mels, self.n_frames, self.n_tags = n_mels, n_frames, n_tags
        self.input_norm = nn.BatchNorm2d(1)
        self.blocks = conv_pool_blocks(channels, pools)
        in_channels = channels[-1]
        self.dropout = nn.Dropout(dropout)
        height = pooled_size(n_mels, [p[0] for p in pools])
        width = pooled_size(n_frames, [p[1] for p in pools])
        self.feature_shape = (height, width, in_channels)
        self.classifier = nn.Linear(height * width * in_channels, n_tags)

    def paper_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """The layers in forward order, as (display name, module) pairs (for ``--summary``)."""
        yield "input batch norm", self.input_norm
        yield from conv_pool_layers(self.blocks)
        yield f"dropout {self.dropout.p:g}", self.dropout
        yield f"dense {self.n_tags}", self.classifier

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """The flattened last map (batch, mel * time * channels) for a log-Mel batch."""
        return torch.flatten(self.blocks(self.input_norm(mel.unsqueeze(1))), 1)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(embedding))
