"""Checks of a model's segments and network that can run before any data is prepared.

A chunk model (`ModelSpec.frame_samples` set) reads fixed-length chunks whatever the dataset's clip
length, so its network input is known from the options alone: Mel settings that leave too few
frames, or a transformer asked for more frames than its positional table holds, can be refused
at once with the network's own ConfigError, instead of after the (possibly hour-long) decoding
of the data. The network is built on the meta device, so nothing is allocated.
"""

from __future__ import annotations

import torch

from datamodules.segments import SegmentLayout
from experiments.data import default_train_crop, frontend_config, layout_clip_samples, model_spec
from lightning_modules.registry import build_network, input_shape, network_config, segment_layout


def check_chunk_network(options) -> None:
    """Build the network a chunk model's options describe (ConfigError if impossible); no-op for other models."""
    if not options.model:
        return
    spec = model_spec(options.model)
    if spec.frame_samples is None:
        return
    frontend = frontend_config(spec, options)
    shape = input_shape(frontend, SegmentLayout(spec.frame_samples))
    with torch.device("meta"):
        build_network(network_config(spec, shape, options.n_tags, options))


def check_segments_fit(options, spec, frontend, clip_samples: int) -> None:
    """Build the segments and the network of a training run for the clip length its data will have.

    The reader knows that length before preparing anything (MTAT's 29.1 s, the generated stand-in's
    `--synthetic-clip-samples`, MTG-Jamendo's window), so a chunk longer than the clips, random crops
    asked of fixed segments, or Mel settings that leave a whole-clip model too few frames fail in one
    line rather than after the decoding.
    """
    layout = segment_layout(spec, layout_clip_samples(options, spec, clip_samples), frontend,
                            options.segments_per_clip, default_train_crop(options), options.random_crops_per_clip)
    with torch.device("meta"):
        build_network(network_config(spec, input_shape(frontend, layout), options.n_tags, options))
