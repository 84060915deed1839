"""2D CNN on log-Mel spectrograms (Table 2 of the paper; after Choi et al. 2016).

Input (batch, n_mels, n_frames), read as a one-channel image with height = Mel bands and
width = time (the paper's Keras input (128, 261, 1)). Four blocks of conv 3x3 ('valid', with
bias) + BatchNorm + ReLU, maxpool 2x2 (floor), dropout; flatten; dense to the tags. With
128 Mel x 261 frames the blocks give 126x259x32 (the table misprints it as 126x256x32),
63x129x32, 61x127x64, 30x63x64, 28x61x64, 14x30x64, 12x28x64, 6x14x64, and the network has
362,418 parameters in the paper's (Keras) count. Returns logits (no sigmoid).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from infrastructure.errors import ConfigError
from lightning_modules.networks.args import check_channels, check_dropout, check_int
from lightning_modules.networks.base import MelNetwork


def _block_sizes(size: int, n_blocks: int) -> list[int]:
    """Sizes along one axis after each conv3 ('valid') and each maxpool2: [conv1, pool1, ...]."""
    sizes = []
    for _ in range(n_blocks):
        size = size - 2
        sizes.append(size)
        size = size // 2
        sizes.append(size)
    return sizes


def min_input_size(n_blocks: int) -> int:
    """Smallest height or width that survives ``n_blocks`` conv3 'valid' + maxpool2 blocks."""
    size = 1
    for _ in range(n_blocks):
        size = 2 * size + 2
    return size


class MelCNN(MelNetwork):
    """2D CNN: log-Mel (batch, n_mels, n_frames) -> tag logits (batch, n_tags).

    Layers: ``blocks`` (one per entry of ``channels``: ``conv`` = Conv2d 3x3 + BatchNorm2d +
    ReLU, ``pool`` = MaxPool2d 2x2, ``dropout``), ``classifier`` (dense, sized from the input).
    Raises ConfigError when n_mels or n_frames is too small for the blocks.

    Attributes: ``n_mels``, ``n_frames``, ``n_tags``, ``input_shape`` ((n_mels, n_frames)),
    ``feature_shape`` ((mel, time, channels) entering the dense layer; the embedding is it flattened).
    """

    def __init__(self, n_mels: int, n_frames: int, n_tags: int,
                 channels: Sequence[int] = (32, 64, 64, 64), dropout: float = 0.1) -> None:
        super().__init__()
        for option, value in (("n_mels", n_mels), ("n_frames", n_frames), ("n_tags", n_tags)):
            check_int("mel_cnn", option, value)
        channels = check_channels("mel_cnn", "channels", channels)
        check_dropout("mel_cnn", dropout)

        n_blocks = len(channels)
        needed = min_input_size(n_blocks)
        if n_frames < needed:
            raise ConfigError(
                f"Mel settings give {n_frames} frames per segment; mel_cnn needs at least "
                f"{needed} ({n_blocks} conv3+pool2 blocks)")
        if n_mels < needed:
            raise ConfigError(
                f"Mel settings give {n_mels} Mel bands; mel_cnn needs at least "
                f"{needed} ({n_blocks} conv3+pool2 blocks)")

        self.n_mels = n_mels
        self.n_frames = n_frames
        self.n_tags = n_tags
        blocks = []
        in_channels = 1
        for c in channels:
            blocks.append(nn.Sequential(OrderedDict(
                conv=nn.Sequential(nn.Conv2d(in_channels, c, 3), nn.BatchNorm2d(c),
                                   nn.ReLU(inplace=True)),
                pool=nn.MaxPool2d(2),
                dropout=nn.Dropout(dropout),
            )))
            in_channels = c
        self.blocks = nn.Sequential(*blocks)
        height = _block_sizes(n_mels, n_blocks)[-1]
        width = _block_sizes(n_frames, n_blocks)[-1]
        self.feature_shape = (height, width, in_channels)
        self.classifier = nn.Linear(height * width * in_channels, n_tags)

    def paper_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """The layers of Table 2 in forward order, as (display name, module) pairs."""
        for block in self.blocks:
            yield f"conv (3,3) - {block.conv[0].out_channels}", block.conv
            yield "maxpool (2,2)", block.pool
            yield f"dropout {block.dropout.p:g}", block.dropout
        yield f"dense {self.n_tags}", self.classifier

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """The flattened last block's map (batch, mel * time * channels) for a log-Mel batch."""
        return torch.flatten(self.blocks(mel.unsqueeze(1)), 1)
