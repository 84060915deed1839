"""2-D convolution blocks shared by Won et al.'s short-chunk, harmonic and transformer networks.

All three papers build on 3x3 convolutions with batch norm and ReLU, and differ in how a block
downsamples and whether it has a residual path:

* `ConvBlock`: conv 3x3 ('same') + BN + ReLU + max-pool (the short-chunk CNN's VGG-style block).
* `StridedResBlock`: two conv 3x3 + BN with a ReLU between, the first one strided; a strided
  conv 3x3 + BN projects the input when the stride or the width changes; ReLU after the sum
  (the short-chunk ResNet's block: it downsamples by striding, not pooling).
* `PooledResBlock`: two conv 3x3 + BN with a ReLU between, an identity shortcut (or a conv 3x3 +
  BN projection when the width changes), ReLU after the sum, then max-pool (Harmonic CNN and the
  tagging transformer's front-end).

Every convolution has a bias, as in the authors' PyTorch code, so that parameter counts match
theirs. Sizes: 'same' convolutions keep the size; a max-pool of p gives floor(n / p); a strided
conv 3x3 with padding 1 and stride s gives floor((n - 1) / s) + 1.
"""

from __future__ import annotations

import torch
from torch import nn


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def pooled_size(size: int, pool: int) -> int:
    """Size after a max-pool of kernel = stride = ``pool`` (floor)."""
    return size // pool


def strided_size(size: int, stride: int) -> int:
    """Size after a conv 3x3 with padding 1 and ``stride``."""
    return (size - 1) // stride + 1


class ConvBlock(nn.Module):
    """Conv2d 3x3 'same' + BatchNorm2d + ReLU + MaxPool2d(``pool``)."""

    def __init__(self, in_channels: int, out_channels: int, pool: int | tuple[int, int] = 2) -> None:
        super().__init__()
        self.pool_size = _pair(pool)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(self.pool_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class StridedResBlock(nn.Module):
    """Residual block that downsamples by a strided first convolution (see the module doc)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int | tuple[int, int] = 2) -> None:
        super().__init__()
        self.stride = _pair(stride)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=self.stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if self.stride != (1, 1) or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=self.stride, padding=1),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + self.shortcut(x))


class PooledResBlock(nn.Module):
    """Residual block followed by a max-pool (see the module doc)."""

    def __init__(self, in_channels: int, out_channels: int, pool: int | tuple[int, int] = 2) -> None:
        super().__init__()
        self.pool_size = _pair(pool)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()
        self.pool = nn.MaxPool2d(self.pool_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.pool(self.relu(out + self.shortcut(x)))


class DenseHead(nn.Module):
    """Won et al.'s classifier: dense + BatchNorm1d + ReLU + dropout, then dense to the tags (logits).

    `embed` is the part before the dropout (the network's embedding), `classify` the rest; a network
    calls the two separately, so `--summary` lists the head as one row of its `layers()`.
    """

    def __init__(self, features: int, n_tags: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(features, features)
        self.bn = nn.BatchNorm1d(features)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(features, n_tags)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.dense(x)))

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))

    def layers(self) -> tuple[nn.Module, ...]:
        """The modules in the order they run (one `--summary` row)."""
        return (self.dense, self.bn, self.relu, self.dropout, self.classifier)


class GlobalMaxPool(nn.Module):
    """Max over the remaining frequency and time positions: (B, C, F, T) -> (B, C).

    The authors' code squeezes a frequency axis that their layer stack reduces to 1 and max-pools
    over time; taking the max over both axes is the same thing there and also defines the
    network when other Mel settings leave more than one frequency position.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=(2, 3))
