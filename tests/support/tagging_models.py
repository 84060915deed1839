"""Untrained CPU-sized taggers of the registry's models, for the tagging API's tests (no training needed)."""

from __future__ import annotations

import torch

from experiments.resolve import mel_settings, network_overrides
from lightning_modules.registry import MODELS, build_network, input_shape, network_config, segment_layout
from tests.support.helpers import CHUNK_CLIP_SAMPLES, run_options, small_model_args

TAGS = ["a", "b", "c", "d", "e"]


def small_tagger(name: str, seed: int = 0):
    """An untrained `name` (its registry entry's small variant) for clips of 5.25 s, thresholds 0.4."""
    from lightning_modules.tagging_module import TaggingModule
    from tagging.tagger import Tagger

    spec = MODELS[name].small_variant()
    options = run_options(*small_model_args(name), model=name)
    frontend = mel_settings(spec, options)
    layout = segment_layout(spec, CHUNK_CLIP_SAMPLES, frontend, options.segments_per_clip)
    config = network_config(spec, input_shape(frontend, layout), len(TAGS), **network_overrides(options))
    torch.manual_seed(seed)
    module = TaggingModule(build_network(config), config, TAGS, frontend and frontend.to_dict(), layout.to_dict(),
                           16_000)
    module.thresholds.fill_(0.4)
    return Tagger.from_module(module)
