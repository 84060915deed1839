"""Checks of a model's segments and network that can run before any data is prepared.

A chunk model (`ModelSpec.frame_samples` set) reads fixed-length chunks whatever the dataset's clip
length, so its network input is known from the options alone: Mel settings that leave too few
frames, or a transformer asked for more frames than its positional table holds, can be refused
at once with the network's own ConfigError, instead of after the (possibly hour-long) decoding
of the data. The network is built on the meta device, so nothing is allocated.

A refusal names its fix where one exists: the same check is repeated on other values of the setting
at fault (a binary search on the meta device) to find the largest hop, the fewest Mel bands or the
shortest clip with which the network can be built.
"""

from __future__ import annotations

import torch

from datamodules.segments import SegmentLayout
from experiments.data import default_train_crop, frontend_config, layout_clip_samples, model_spec
from infrastructure.audio import SAMPLE_RATE
from infrastructure.errors import ConfigError
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
    try:
        _build(options, spec, frontend, clip_samples)
    except ConfigError as error:
        fixes = _fixes(options, spec, frontend, clip_samples)
        if not fixes:
            raise
        raise ConfigError(f"{error}; it fits with {' or with '.join(fixes)}") from None


def _build(options, spec, frontend, clip_samples: int) -> None:
    layout = segment_layout(spec, layout_clip_samples(options, spec, clip_samples), frontend,
                            options.segments_per_clip, default_train_crop(options), options.random_crops_per_clip)
    with torch.device("meta"):
        build_network(network_config(spec, input_shape(frontend, layout), options.n_tags, options))


def _fits(options, spec, clip_samples: int, **mel) -> bool:
    try:
        changed = options.replace(**mel) if mel else options
        _build(changed, spec, frontend_config(spec, changed), clip_samples)
    except ConfigError:
        return False
    return True


def _boundary(fits, low: int, high: int, *, largest: bool) -> int | None:
    """The largest (or smallest) value in [low, high] that fits, fitting being monotone; None when none does."""
    if high < low or not fits(low if largest else high):
        return None
    while low < high:
        if largest:  # fits up to some value, then no more
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        else:  # fits from some value on
            middle = (low + high) // 2
            low, high = (low, middle) if fits(middle) else (middle + 1, high)
    return low


def _fixes(options, spec, frontend, clip_samples: int) -> list[str]:
    """The settings with which the network would build: a smaller hop, more Mel bands, longer clips."""
    fixes = []
    if frontend is not None:
        hop = _boundary(lambda v: _fits(options, spec, clip_samples, hop_length=v), 1, frontend.hop_length - 1,
                        largest=True)
        if hop is not None:
            fixes.append(f"--hop-length {hop} or less")
        mels = _boundary(lambda v: _fits(options, spec, clip_samples, n_mels=v), frontend.n_mels + 1, 512,
                         largest=False)
        if mels is not None and hop is None:
            fixes.append(f"--n-mels {mels} or more")
    if spec.frame_samples is None or options.dataset != "mtg-jamendo":
        longest = 64 * clip_samples
        shortest = _boundary(lambda v: _fits(options, spec, v), clip_samples + 1, longest, largest=False)
        if shortest is not None:
            where = " (--synthetic-clip-samples)" if options.data == "synthetic" else ""
            fixes.append(f"clips of at least {shortest} samples ({shortest / SAMPLE_RATE:.1f} s){where}")
    return fixes
