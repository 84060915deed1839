"""musicnn: the musically motivated tagger of Pons & Serra 2019 ("musicnn: pre-trained
convolutional neural networks for music audio tagging"; the architecture of Pons et al. 2018,
"End-to-end learning for music audio tagging at scale"), the ``MTT_musicnn`` configuration.

Input (batch, n_mels, n_frames) log-Mel of a 3 s chunk (96 Mel bands, n_fft 512, hop 256 at
16 kHz, as in the authors' code and Won et al. 2020). The layers follow the authors' TensorFlow
code (jordipons/musicnn, ``models.py``):

* input: batch norm over the one input channel;
* front-end, five branches concatenated along features:
  - two *timbral* branches: vertical filters spanning 70% and 40% of the Mel bands
    (``int(0.7 * 96) = 67`` and ``int(0.4 * 96) = 38`` bands) by 7 frames, 204 filters each
    (``int(1.6 * 128)``), time padded to keep the length; ReLU, batch norm, max over frequency;
  - three *temporal* branches: horizontal filters of 128, 64 and 32 frames by one band, 51
    filters each (``int(1.6 * 32)``), 'same' padding; ReLU, batch norm, max over frequency;
  giving 2 x 204 + 3 x 51 = 561 features per frame;
* mid-end: three 1-D convolutions of 7 frames, 64 filters, ReLU then batch norm, the second and
  third with residual connections; their outputs and the front-end's are concatenated (dense
  connections): 561 + 3 x 64 = 753 features per frame;
* back-end: max and mean over time (1,506 features), batch norm, dropout 0.5, dense 200 + ReLU,
  batch norm, dropout 0.5, dense to the tags.

With 96 Mel bands and 50 tags: 787,159 trainable parameters (PyTorch and TensorFlow agree, the
conv layers having biases in both), 792,079 counting the batch norms' moving statistics the
Keras/TensorFlow way. Won et al.'s reimplementation differs (its temporal branches average
frequency before a 1-D convolution; no batch norm before the dense layers); this one keeps the
authors'. Any chunk length of at least 7 frames works (the back-end pools over time). Returns
logits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from infrastructure.errors import ConfigError
from lightning_modules.networks.args import check_dropout, check_int
from lightning_modules.networks.base import MelNetwork

TIMBRAL_HEIGHTS: tuple[float, ...] = (0.7, 0.4)
"""Heights of the timbral filters as fractions of the Mel bands (the authors' f77 and f74)."""

TEMPORAL_LENGTHS: tuple[int, ...] = (128, 64, 32)
"""Lengths (frames) of the temporal filters (the authors' s1, s2, s3)."""


class _FrontendBranch(nn.Module):
    """Conv2d over (mel, time) + ReLU + BatchNorm2d, then max over the Mel axis: (B, 1, M, T) -> (B, C, T)."""

    def __init__(self, filters: int, kernel: tuple[int, int], time_padding: tuple[int, int]) -> None:
        super().__init__()
        self.time_padding = time_padding  # (left, right): TensorFlow's 'same' puts the odd one on the right
        self.conv = nn.Conv2d(1, filters, kernel)
        self.relu = nn.ReLU(inplace=True)
        self.norm = nn.BatchNorm2d(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, self.time_padding)
        return self.norm(self.relu(self.conv(x))).amax(dim=2)


class _MidendLayer(nn.Module):
    """Conv1d (7 frames, 'same') + ReLU + BatchNorm1d: (B, C_in, T) -> (B, C, T)."""

    def __init__(self, in_channels: int, filters: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, filters, kernel, padding=kernel // 2)
        self.relu = nn.ReLU(inplace=True)
        self.norm = nn.BatchNorm1d(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.relu(self.conv(x)))


class Musicnn(MelNetwork):
    """musicnn: log-Mel (batch, n_mels, n_frames) -> tag logits (batch, n_tags).

    Layers: ``input_norm``, ``timbral`` and ``temporal`` (front-end branches), ``midend`` (three
    1-D conv layers, residual from the second on), ``backend_norm`` (batch norm of the pooled
    features), ``backend_dropout``, ``dense`` (+ ReLU), ``dense_norm``, ``dropout``,
    ``classifier``.

    Attributes: ``n_mels``, ``n_frames``, ``n_tags``, ``input_shape``, ``frontend_features``
    (561 by default), ``pooled_features`` (2 x 753 by default).
    """

    def __init__(self, n_mels: int, n_frames: int, n_tags: int,
                 timbral_heights: Sequence[float] = TIMBRAL_HEIGHTS, timbral_filters: int = 204,
                 timbral_width: int = 7, temporal_lengths: Sequence[int] = TEMPORAL_LENGTHS,
                 temporal_filters: int = 51, midend_filters: int = 64, midend_layers: int = 3,
                 midend_kernel: int = 7, backend_units: int = 200, dropout: float = 0.5) -> None:
        super().__init__()
        for option, value in (("n_mels", n_mels), ("n_frames", n_frames), ("n_tags", n_tags),
                              ("timbral_filters", timbral_filters), ("temporal_filters", temporal_filters),
                              ("midend_filters", midend_filters), ("midend_layers", midend_layers),
                              ("backend_units", backend_units)):
            check_int("musicnn", option, value)
        for option, value in (("timbral_width", timbral_width), ("midend_kernel", midend_kernel)):
            if check_int("musicnn", option, value) % 2 == 0:
                raise ConfigError(f"musicnn: {option} must be odd (time padding keeps the length), got {value}")
        check_dropout("musicnn", dropout)
        heights = []
        for fraction in timbral_heights:
            if not 0.0 < float(fraction) <= 1.0:
                raise ConfigError(f"musicnn: timbral heights are fractions of the Mel bands in (0, 1], got {fraction!r}")
            heights.append(int(float(fraction) * n_mels))
        if not heights and not temporal_lengths:
            raise ConfigError("musicnn: the front-end needs at least one timbral or temporal branch")
        if any(h < 1 for h in heights):
            raise ConfigError(f"Mel settings give {n_mels} Mel bands; musicnn's timbral filters "
                              f"{list(timbral_heights)} of them round to zero bands")
        for length in temporal_lengths:
            check_int("musicnn", "temporal length", length)
        if n_frames < midend_kernel:
            raise ConfigError(f"Mel settings give {n_frames} frames per segment; musicnn needs at least "
                              f"{midend_kernel}")

        self.n_mels, self.n_frames, self.n_tags = n_mels, n_frames, n_tags
        self.timbral_heights = tuple(heights)
        self.input_norm = nn.BatchNorm2d(1)
        self.timbral = nn.ModuleList(
            _FrontendBranch(timbral_filters, (h, timbral_width), (timbral_width // 2, timbral_width // 2))
            for h in heights)
        self.temporal = nn.ModuleList(
            _FrontendBranch(temporal_filters, (1, length), ((length - 1) // 2, length // 2))
            for length in temporal_lengths)
        self.frontend_features = len(heights) * timbral_filters + len(temporal_lengths) * temporal_filters
        self.midend = nn.ModuleList(
            _MidendLayer(self.frontend_features if i == 0 else midend_filters, midend_filters, midend_kernel)
            for i in range(midend_layers))
        features = self.frontend_features + midend_layers * midend_filters
        self.pooled_features = 2 * features
        self.backend_norm = nn.BatchNorm1d(self.pooled_features)
        self.backend_dropout = nn.Dropout(dropout)
        self.dense = nn.Sequential(nn.Linear(self.pooled_features, backend_units), nn.ReLU(inplace=True))
        self.dense_norm = nn.BatchNorm1d(backend_units)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backend_units, n_tags)

    def paper_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """The layers in forward order, as (display name, module) pairs (for ``--summary``)."""
        yield "input batch norm", self.input_norm
        for branch in self.timbral:
            kernel = branch.conv.kernel_size
            yield f"timbral ({kernel[0]},{kernel[1]}) - {branch.conv.out_channels}, max over Mel", branch
        for branch in self.temporal:
            kernel = branch.conv.kernel_size
            yield f"temporal ({kernel[0]},{kernel[1]}) - {branch.conv.out_channels}, max over Mel", branch
        for i, layer in enumerate(self.midend):
            residual = " + residual" if i > 0 else ""
            yield f"mid-end conv {layer.conv.kernel_size[0]} - {layer.conv.out_channels}{residual}", layer
        yield "max + mean over time, batch norm", self.backend_norm
        yield f"dropout {self.backend_dropout.p:g}", self.backend_dropout
        yield f"dense {self.dense[0].out_features} + ReLU", self.dense
        yield "batch norm", self.dense_norm
        yield f"dropout {self.dropout.p:g}", self.dropout
        yield f"dense {self.n_tags}", self.classifier

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """The back-end's dense layer after its batch norm (batch, backend_units) for a log-Mel batch."""
        x = self.input_norm(mel.unsqueeze(1))
        frontend = torch.cat([branch(x) for branch in (*self.timbral, *self.temporal)], dim=1)  # (B, 561, T)
        features = [frontend]
        h = frontend
        for i, layer in enumerate(self.midend):
            h = layer(h) if i == 0 else layer(h) + h
            features.append(h)
        dense_features = torch.cat(features, dim=1)                                           # (B, 753, T)
        pooled = torch.cat([dense_features.amax(dim=2), dense_features.mean(dim=2)], dim=1)    # (B, 1506)
        x = self.backend_dropout(self.backend_norm(pooled))
        return self.dense_norm(self.dense(x))

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(embedding))
