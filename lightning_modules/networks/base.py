"""The interface every tagging network shares: input shape and check, embedding, summary rows.

A network maps one batch of model inputs, log-Mel spectrograms (batch, n_mels, n_frames) or
waveform segments (batch, n_samples), to tag logits (batch, n_tags), in two steps:

* `embed(x)`: the penultimate representation, (batch, D): what the final tag layer reads (before
  the dropout that some networks apply right in front of it, which is the identity in evaluation).
  Clip embeddings, similarity search and distillation use it.
* `classify(embedding)`: that dropout, if any, and the final tag layer (`tag_layer`, an
  `nn.Linear` with D inputs).

`forward(x)` is `classify(embed(x))` after one input check, so the two can never disagree and the
input check is written once. A network defines `features(x)` (the embedding of an already checked
batch), `classify`, `input_shape` (most get it from `MelNetwork` or `WaveformNetwork`), and
`paper_layers()`: the rows of `run.py --summary` (`lightning_modules/networks/summary.py`), as
(display name, module) pairs in forward order, together holding every parameter once; a row may
name a tuple of modules that run one after the other (a head whose parts are called separately).

Adding a network to `run.py` is this class's subclass in one file plus one registry entry
(`lightning_modules/registry.py`; docs/adding-a-model.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


class TaggingNetwork(nn.Module):
    """Base of the networks `run.py --model` builds (see the module doc)."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example, without the batch dimension."""
        raise NotImplementedError(f"{type(self).__name__} must define input_shape")

    @property
    def tag_layer(self) -> nn.Linear:
        """The final layer: embedding (batch, D) -> logits (batch, n_tags). Default: ``self.classifier``."""
        return self.classifier

    @property
    def embedding_dim(self) -> int:
        """D, the size of one example's embedding."""
        return self.tag_layer.in_features

    def check_input(self, x: torch.Tensor) -> None:
        """ValueError unless ``x`` is a batch of ``input_shape`` examples."""
        shape = tuple(self.input_shape)
        if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"{type(self).__name__} expects input of shape (batch, {', '.join(map(str, shape))}), "
                             f"got {tuple(x.shape)}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding (batch, D) of a checked input batch."""
        raise NotImplementedError(f"{type(self).__name__} must define features(x)")

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Tag logits (batch, n_tags) from embeddings (batch, D). Default: the tag layer alone."""
        return self.tag_layer(embedding)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate representation (batch, D) of an input batch (see the module doc)."""
        self.check_input(x)
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tag logits (batch, n_tags) for an input batch (batch, *input_shape)."""
        self.check_input(x)
        return self.classify(self.features(x))

    def paper_layers(self) -> Iterator[tuple[str, nn.Module | tuple[nn.Module, ...]]]:
        """The rows of ``--summary`` in forward order, as (display name, module or modules) pairs."""
        raise NotImplementedError(f"{type(self).__name__} must define paper_layers()")


class MelNetwork(TaggingNetwork):
    """A network on log-Mel spectrograms: input (batch, n_mels, n_frames); sets ``n_mels`` and ``n_frames``."""

    n_mels: int
    n_frames: int

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.n_mels, self.n_frames)


class WaveformNetwork(TaggingNetwork):
    """A network on raw waveform segments: input (batch, n_samples); sets ``n_samples``."""

    n_samples: int

    @property
    def input_shape(self) -> tuple[int]:
        return (self.n_samples,)
