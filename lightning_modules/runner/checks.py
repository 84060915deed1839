"""Checks of a chunk model's network that can run before any data is prepared.

A chunk model (`ModelSpec.frame_samples` set) reads fixed-length chunks whatever the dataset's clip
length, so its network input is known from the options alone: Mel settings that leave too few
frames, or a transformer asked for more frames than its positional table holds, can be refused
at once with the network's own ConfigError, instead of after the (possibly hour-long) decoding
of the data. The network is built on the meta device, so nothing is allocated.
"""

from __future__ import annotations

import torch

from datamodules.segments import SegmentLayout
from lightning_modules.registry import build_network, input_shape, network_config
from lightning_modules.runner.data import frontend_config, model_spec


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
