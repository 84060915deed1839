"""Music tagging transformer (Won, Choi, Nam 2021, ISMIR: "Semi-supervised music tagging transformer").

A CNN front-end turns a log-Mel chunk into a sequence of frame embeddings; a transformer encoder
with a learned [CLS] token and learned positional embeddings summarises the sequence; the [CLS]
output is the clip representation the tag layer reads. Settings follow the authors' training
script (minzwon/semi-supervised-music-tagging-transformer `src/train.py`, `src/models.py`,
`src/modules.py`; written anew here), which trains on 10 s chunks (220,500 samples at their
22,050 Hz) with 128 Mel bands, n_fft 1024 and torchaudio's default hop n_fft // 2 = 512, and
averages 8 chunks per song in evaluation. The suite's audio is 16 kHz, so a 10 s chunk is 160,000
samples (313 frames); MTAT has no content above 8 kHz, so f_max is the Nyquist frequency.

Layers:

* input batch norm (one channel) over the dB Mel;
* front-end: three residual + max-pool blocks of width w = 128 (pools 2x2, 2x2, 2x1: frequency / 8,
  time / 4), then the (w x n_mels / 8) values of each remaining frame go through one dense layer
  to the model width d = 256;
* [CLS] + positional embeddings for up to ``max_tokens`` = 512 frames (+1 for [CLS]), dropout;
* 4 pre-norm transformer layers: LayerNorm -> 8-head self-attention (query/key/value projection
  without bias, output projection with bias) -> residual; LayerNorm -> dense 4d + GELU + dense d
  -> residual; dropout 0.1 after the attention output, inside and after the feed-forward;
* LayerNorm + dense to the tags on the [CLS] output. Returns logits (no sigmoid).

A chunk with more frames than the positional table holds (more than 4 * max_tokens + 3 frames)
is refused with a ConfigError when the network is built, before any data is prepared.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from infrastructure.errors import ConfigError
from lightning_modules.networks.args import check_dropout, check_int
from lightning_modules.networks.base import MelNetwork
from lightning_modules.networks.blocks2d import PooledResBlock, pooled_size

CHUNK_SAMPLES = 160_000
"""10 s at 16 kHz: the authors' 10 s chunks (220,500 samples at 22,050 Hz)."""

FRONTEND_POOLS = ((2, 2), (2, 2), (2, 1))
"""(frequency, time) max-pools of the three front-end blocks."""


class CNNFrontEnd(nn.Module):
    """Log-Mel (B, 1, n_mels, T) -> frame embeddings (B, T // 4, d)."""

    def __init__(self, n_mels: int, channels: int, d_model: int) -> None:
        super().__init__()
        blocks = []
        in_channels = 1
        bands = n_mels
        for pool in FRONTEND_POOLS:
            blocks.append(PooledResBlock(in_channels, channels, pool))
            in_channels = channels
            bands = pooled_size(bands, pool[0])
        self.blocks = nn.Sequential(*blocks)
        self.bands = bands
        self.project = nn.Linear(channels * bands, d_model)
        self.project.sequence_output = True  # `--summary`: (tokens, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)                                 # (B, C, F, T)
        b, c, f, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * f)     # one vector per remaining frame
        return self.project(x)


class TokenEmbedding(nn.Module):
    """Prepend the learned [CLS] token and add learned positional embeddings: (B, T, d) -> (B, T + 1, d)."""

    def __init__(self, d_model: int, max_tokens: int, dropout: float) -> None:
        super().__init__()
        self.max_tokens = max_tokens
        self.cls_token = nn.Parameter(torch.randn(d_model))
        self.positions = nn.Parameter(torch.randn(1, max_tokens + 1, d_model))
        self.dropout = nn.Dropout(dropout)
        self.sequence_output = True  # `--summary` prints (tokens, features), not channels-last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.max_tokens:
            raise ValueError(f"{x.shape[1]} frames for a positional table of {self.max_tokens}")
        cls = self.cls_token.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat((cls, x), dim=1) + self.positions[:, : x.shape[1] + 1].to(x.dtype)
        return self.dropout(x)


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer (see the module doc)."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout_p = dropout
        self.attn_norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.attn_out = nn.Linear(d_model, d_model)
        self.ff_norm = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(ff_dim, d_model), nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)
        self.sequence_output = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)  # no attention dropout, as the authors
        x = x + self.dropout(self.attn_out(attended.transpose(1, 2).reshape(b, n, d)))
        return x + self.ff(self.ff_norm(x))


class TaggingTransformer(MelNetwork):
    """CNN front-end + transformer encoder: log-Mel (batch, n_mels, n_frames) -> tag logits (batch, n_tags).

    Layers: ``input_bn``, ``frontend`` (`CNNFrontEnd`), ``embedding`` (`TokenEmbedding`),
    ``layers`` (`EncoderLayer` x ``n_layers``), ``head`` (LayerNorm + dense on the [CLS] output).
    Raises ConfigError for too few Mel bands or frames, a width not divisible by the heads, or
    more frames than ``max_tokens`` positions hold.

    Attributes: ``n_mels``, ``n_frames``, ``n_tags``, ``n_tokens`` (frames after the front-end),
    ``input_shape``.
    """

    def __init__(self, n_mels: int, n_frames: int, n_tags: int, channels: int = 128, d_model: int = 256,
                 n_heads: int = 8, n_layers: int = 4, max_tokens: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        name = "tagging_transformer"
        for option, value in (("n_mels", n_mels), ("n_frames", n_frames), ("n_tags", n_tags),
                              ("channels", channels), ("d_model", d_model), ("n_heads", n_heads),
                              ("n_layers", n_layers), ("max_tokens", max_tokens)):
            check_int(name, option, value)
        check_dropout(name, dropout)
        if d_model % n_heads:
            raise ConfigError(f"{name}: d_model {d_model} is not divisible by n_heads {n_heads}")
        freq_pool = math.prod(p[0] for p in FRONTEND_POOLS)
        time_pool = math.prod(p[1] for p in FRONTEND_POOLS)
        if n_mels < freq_pool or n_frames < time_pool:
            raise ConfigError(f"Mel settings give {n_mels} Mel bands x {n_frames} frames per chunk; {name} needs "
                              f"at least {freq_pool} bands and {time_pool} frames")
        n_tokens = n_frames
        for pool in FRONTEND_POOLS:
            n_tokens = pooled_size(n_tokens, pool[1])
        if n_tokens > max_tokens:
            raise ConfigError(
                f"{name}: chunks of {n_frames} frames give {n_tokens} tokens, more than its {max_tokens} positions "
                f"(at most {time_pool * max_tokens + time_pool - 1} frames); use a shorter chunk or a larger hop")
        self.n_mels, self.n_frames, self.n_tags, self.n_tokens = n_mels, n_frames, n_tags, n_tokens
        self.input_bn = nn.BatchNorm2d(1)
        self.frontend = CNNFrontEnd(n_mels, channels, d_model)
        self.embedding = TokenEmbedding(d_model, max_tokens, dropout)
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, 4 * d_model, dropout) for _ in range(n_layers))
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, n_tags))

    def paper_layers(self) -> Iterator[tuple[str, nn.Module]]:
        """Layers in forward order for `--summary`, as (display name, module) pairs."""
        yield "input batch norm", self.input_bn
        width = self.frontend.blocks[0].conv1.out_channels
        for block in self.frontend.blocks:
            pool = "x".join(str(p) for p in block.pool_size)
            yield f"res block + maxpool {pool} - {width}", block
        yield f"dense per frame -> {self.frontend.project.out_features}", self.frontend.project
        yield f"[CLS] + positions ({self.embedding.max_tokens} + 1)", self.embedding
        for i, layer in enumerate(self.layers):
            yield f"transformer layer {i + 1} ({layer.n_heads} heads, ff {layer.ff[0].out_features})", layer
        yield f"LayerNorm + dense {self.n_tags} on [CLS]", tuple(self.head)

    @property
    def tag_layer(self) -> nn.Linear:
        return self.head[1]

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """The layer-normed [CLS] output (batch, d_model) for a log-Mel batch."""
        x = self.embedding(self.frontend(self.input_bn(mel.unsqueeze(1))))
        for layer in self.layers:
            x = layer(x)
        return self.head[0](x[:, 0])
