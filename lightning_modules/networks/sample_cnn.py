"""SampleCNN on raw waveform (Table 1 of the paper; Lee et al. 2017).

Two variants share one class:

* whole clip (Table 1): the 465,984-sample MTAT clip in one go. A strided conv3-128 (stride 3)
  gives 155,328 steps; then eight blocks of conv3 ('same' padding) + BatchNorm + ReLU + maxpool3
  with channels 128, 256 x6, 512 leave 23 x 512; dropout 0.5, flatten, dense to the tags.
  2,124,466 parameters in the paper's (Keras) count.
* frames (Lee et al.'s "3^9 model"): 59,049-sample frames; the strided conv gives 19,683 steps,
  nine blocks with channels (128, 128, 256 x6, 512) leave 1 x 512, a 1x1 conv 512 (+BN+ReLU)
  follows, then dropout 0.5 and dense. A clip's prediction is the mean over its frames (done by
  the caller, not here).

The network returns logits (no sigmoid), shape (batch, n_tags).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from infrastructure.errors import ConfigError
from lightning_modules.networks.args import check_channels, check_dropout, check_int
from lightning_modules.networks.base import WaveformNetwork

FRAME_SAMPLES = 59_049
"""Input length of the frame variant: 3^10 samples (3.69 s at 16 kHz)."""

WHOLE_CLIP_CHANNELS: tuple[int, ...] = (128, 256, 256, 256, 256, 256, 256, 512)
"""Channels of the conv3+maxpool3 blocks of Table 1 (whole 465,984-sample clip)."""

FRAME_CHANNELS: tuple[int, ...] = (128, 128, 256, 256, 256, 256, 256, 256, 512)
"""Channels of the nine conv3+maxpool3 blocks of Lee et al.'s 3^9 frame model."""


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int,
                  padding: int) -> nn.Sequential:
    """Conv1d (with bias, as in the paper's counts) + BatchNorm1d + ReLU."""
    return nn.Sequential(
        nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding),
        nn.BatchNorm1d(out_channels),
        nn.ReLU(inplace=True),
    )


class SampleCNN(WaveformNetwork):
    """SampleCNN: raw waveform (batch, n_samples) -> tag logits (batch, n_tags).

    Layers: ``stem`` (conv3 stride 3, no padding, + BN + ReLU), ``blocks`` (one per entry of
    ``block_channels``: conv3 'same' + BN + ReLU, then maxpool3 with floor), optional
    ``head`` (1x1 conv + BN + ReLU, ``frame_head=True``), ``dropout``, ``classifier`` (dense).
    ``block_channels`` decides the number of blocks; the dense layer's size follows from
    ``n_samples``. Raises ConfigError if ``n_samples`` is too short for the blocks.

    Attributes: ``n_samples``, ``n_tags``, ``input_shape`` (``(n_samples,)``), ``lengths``
    (time steps after the stem and after each block), ``feature_shape`` ((length, channels)
    entering the dense layer; the embedding is it flattened).
    """

    def __init__(self, n_samples: int, n_tags: int,
                 block_channels: Sequence[int] = WHOLE_CLIP_CHANNELS, first_channels: int = 128,
                 dropout: float = 0.5, frame_head: bool = False) -> None:
        super().__init__()
        for option, value in (("n_samples", n_samples), ("n_tags", n_tags), ("first_channels", first_channels)):
            check_int("sample_cnn", option, value)
        block_channels = check_channels("sample_cnn", "block_channels", block_channels)
        check_dropout("sample_cnn", dropout)

        n_blocks = len(block_channels)
        min_samples = 3 ** (n_blocks + 1)
        if n_samples < min_samples:
            raise ConfigError(
                f"sample_cnn: segments of {n_samples} samples are too short; the network needs "
                f"at least {min_samples} (3^{n_blocks + 1}: a stride-3 conv and {n_blocks} "
                f"conv3+maxpool3 blocks)")
        lengths = [(n_samples - 3) // 3 + 1]
        for _ in block_channels:
            lengths.append(lengths[-1] // 3)

        self.n_samples = n_samples
        self.n_tags = n_tags
        self.frame_head = bool(frame_head)
        self.lengths: tuple[int, ...] = tuple(lengths)

        self.stem = _conv_bn_relu(1, first_channels, 3, stride=3, padding=0)
        blocks = []
        in_channels = first_channels
        for channels in block_channels:
            blocks.append(nn.Sequential(OrderedDict(
                conv=_conv_bn_relu(in_channels, channels, 3, stride=1, padding=1),
                pool=nn.MaxPool1d(3, stride=3),
            )))
            in_channels = channels
        self.blocks = nn.ModuleList(blocks)
        self.head = _conv_bn_relu(in_channels, in_channels, 1, stride=1, padding=0) \
            if self.frame_head else None
        self.dropout = nn.Dropout(dropout)
        self.feature_shape = (lengths[-1], in_channels)
        self.classifier = nn.Linear(lengths[-1] * in_channels, n_tags)

    @classmethod
    def whole_clip(cls, n_samples: int, n_tags: int, **overrides) -> SampleCNN:
        """Table 1: whole-clip SampleCNN (8 blocks, channels 128, 256 x6, 512; dropout 0.5)."""
        options = dict(block_channels=WHOLE_CLIP_CHANNELS, first_channels=128, dropout=0.5,
                       frame_head=False)
        options.update(overrides)
        return cls(n_samples, n_tags, **options)

    @classmethod
    def frames(cls, n_tags: int, **overrides) -> SampleCNN:
        """Lee et al.'s 3^9 model on 59,049-sample frames (9 blocks, 1x1 conv 512 head)."""
        options = dict(block_channels=FRAME_CHANNELS, first_channels=128, dropout=0.5,
                       frame_head=True)
        options.update(overrides)
        return cls(FRAME_SAMPLES, n_tags, **options)

    def paper_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """The layers of Table 1 in forward order, as (display name, module) pairs."""
        stem_conv = self.stem[0]
        yield f"conv 3 - {stem_conv.out_channels} (stride 3)", self.stem
        for block in self.blocks:
            yield f"conv 3 - {block.conv[0].out_channels}", block.conv
            yield "maxpool 3", block.pool
        if self.head is not None:
            yield f"conv 1 - {self.head[0].out_channels}", self.head
        yield f"dropout {self.dropout.p:g}", self.dropout
        yield f"dense {self.n_tags}", self.classifier

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """The flattened last map (batch, channels * length) for a waveform batch."""
        x = self.stem(waveform.unsqueeze(1))
        for block in self.blocks:
            x = block(x)
        if self.head is not None:
            x = self.head(x)
        return torch.flatten(x, 1)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Dropout on the (channels, length) map, as Table 1's rows show it, then the dense layer."""
        length, channels = self.feature_shape
        return self.classifier(torch.flatten(self.dropout(embedding.unflatten(1, (channels, length))), 1))
