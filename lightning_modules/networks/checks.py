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


def check_chunk_network(options: dict) -> None:
    """Build the network a chunk model's options describe (ConfigError if impossible); no-op for other models."""
    from lightning_modules.experiment import frontend_config, model_spec
    from lightning_modules.registry import build_network, input_shape, network_config

    if not options.get("model"):
        return
    spec = model_spec(options["model"])
    if spec.frame_samples is None:
        return
    frontend = frontend_config(spec, options)
    shape = input_shape(frontend, SegmentLayout(spec.frame_samples))
    with torch.device("meta"):
        build_network(network_config(spec, shape, options.get("n_tags") or 50, options))
