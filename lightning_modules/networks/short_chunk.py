"""Short-chunk CNN and short-chunk ResNet (Won, Ferraro, Bogdanov, Serra 2020, SMC).

"Evaluation of CNN-based automatic music tagging models": the two best from-scratch MTAT taggers
of its Table (ResNet 0.9129 ROC-AUC / 0.4614 PR-AUC, CNN 0.9126 / 0.4590, `--tags standard
--split clean`). Both read a 3.69 s chunk (59,049 samples at 16 kHz) as a 128-band log-Mel
spectrogram (n_fft 512, hop 256: 231 frames), trained on random chunks and evaluated by averaging
16 chunks per clip.

Layers (the authors' code, `training/model.py` of minzwon/sota-music-tagging-models; written
anew here):

* input batch norm over the dB Mel (one channel);
* seven blocks with widths (w, w, 2w, 2w, 2w, 2w, 4w), w = 128:
  - `short_chunk_cnn`: conv 3x3 'same' + BN + ReLU + max-pool 2x2 (VGG-style), so both Mel
    bands and frames must be at least 2^7 = 128;
  - `short_chunk_resnet`: residual blocks whose first conv (and the 3x3 shortcut projection) has
    stride 2, so any input size works (each block gives ceil(n / 2));
* max over the remaining positions (128 Mel reduce to one band; time: 231 frames leave 1 (CNN)
  or 2 (ResNet) steps);
* dense 4w + BN + ReLU + dropout 0.5 + dense to the tags. Returns logits (no sigmoid).

Parameters at 128 Mel, 50 tags (PyTorch count): CNN 3,687,348; ResNet 12,104,244 (closed forms in
tests/unit/lightning_modules/test_networks_won.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from infrastructure.errors import ConfigError
from lightning_modules.networks.args import check_dropout, check_int
from lightning_modules.networks.base import MelNetwork
from lightning_modules.networks.blocks2d import (
    ConvBlock,
    DenseHead,
    GlobalMaxPool,
    StridedResBlock,
    pooled_size,
    strided_size,
)

WIDTH_MULTIPLIERS = (1, 1, 2, 2, 2, 2, 4)
"""Block widths of both short-chunk networks, in units of ``channels``."""

CHUNK_SAMPLES = 59_049
"""Won et al.'s chunk: 3^10 samples, 3.69 s at 16 kHz (the same length as SampleCNN's frames)."""


class ShortChunkCNN(MelNetwork):
    """Short-chunk CNN (``residual=False``) or ResNet (``residual=True``): log-Mel -> tag logits.

    Input (batch, n_mels, n_frames); output (batch, n_tags). Layers: ``input_bn``, ``blocks``
    (seven), ``pool`` (global max), ``head`` (dense + BN + ReLU + dropout + dense). Raises
    ConfigError for sizes the plain CNN's seven 2x2 pools cannot take (fewer than 128 Mel bands
    or frames).

    Attributes: ``n_mels``, ``n_frames``, ``n_tags``, ``residual``, ``input_shape``,
    ``feature_sizes`` ((mel, time) after each block).
    """

    def __init__(self, n_mels: int, n_frames: int, n_tags: int, channels: int = 128,
                 residual: bool = False, dropout: float = 0.5) -> None:
        super().__init__()
        name = "short_chunk_resnet" if residual else "short_chunk_cnn"
        for option, value in (("n_mels", n_mels), ("n_frames", n_frames), ("n_tags", n_tags),
                              ("channels", channels)):
            check_int(name, option, value)
        check_dropout(name, dropout)
        self.name = name
        self.n_mels, self.n_frames, self.n_tags = n_mels, n_frames, n_tags
        self.residual = bool(residual)

        sizes = []
        mel, time = n_mels, n_frames
        for _ in WIDTH_MULTIPLIERS:
            if residual:
                mel, time = strided_size(mel, 2), strided_size(time, 2)
            else:
                mel, time = pooled_size(mel, 2), pooled_size(time, 2)
            sizes.append((mel, time))
        if not residual and (sizes[-1][0] < 1 or sizes[-1][1] < 1):
            needed = 2 ** len(WIDTH_MULTIPLIERS)
            raise ConfigError(
                f"Mel settings give {n_mels} Mel bands x {n_frames} frames per chunk; short_chunk_cnn needs at "
                f"least {needed} of each ({len(WIDTH_MULTIPLIERS)} conv3 + 2x2 max-pool blocks)")
        self.feature_sizes: tuple[tuple[int, int], ...] = tuple(sizes)

        self.input_bn = nn.BatchNorm2d(1)
        blocks = []
        in_channels = 1
        for multiplier in WIDTH_MULTIPLIERS:
            out_channels = channels * multiplier
            blocks.append(StridedResBlock(in_channels, out_channels, 2) if residual
                          else ConvBlock(in_channels, out_channels, 2))
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = GlobalMaxPool()
        self.head = DenseHead(in_channels, n_tags, dropout)

    def paper_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """Layers in forward order for `--summary`, as (display name, module) pairs."""
        yield "input batch norm", self.input_bn
        kind = "res block 3x3 stride 2" if self.residual else "conv 3x3 + maxpool 2x2"
        for block in self.blocks:
            width = block.conv1.out_channels if self.residual else block.conv.out_channels
            yield f"{kind} - {width}", block
        yield "global max pool", self.pool
        yield f"dense {self.head.dense.out_features} + BN + dropout {self.head.dropout.p:g} + dense {self.n_tags}", \
            self.head.layers()

    @property
    def tag_layer(self) -> nn.Linear:
        return self.head.classifier

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """The head's dense layer after BN and ReLU (batch, 4 * channels) for a log-Mel batch."""
        return self.head.embed(self.pool(self.blocks(self.input_bn(mel.unsqueeze(1)))))

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.head.classify(embedding)
