"""The models `run.py --model` knows: their networks, input frontends, segment layouts and defaults.

A network is described by a JSON-able config `{"name": ..., "kwargs": {...}}`; the config is
saved with every checkpoint, so `build_network(config)` rebuilds the same architecture without
the data (for `--tag`, evaluation, and loading checkpoints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from datamodules.frontend import MelConfig
from datamodules.segments import SegmentLayout
from infrastructure.errors import ConfigError
from lightning_modules.networks import harmonic_cnn, short_chunk, tagging_transformer
from lightning_modules.networks.crnn import CRNN
from lightning_modules.networks.fcn import FCN
from lightning_modules.networks.harmonic_cnn import HarmonicCNN
from lightning_modules.networks.lstm_mel import LSTMMel
from lightning_modules.networks.mel_cnn import MelCNN
from lightning_modules.networks.musicnn import Musicnn
from lightning_modules.networks.sample_cnn import FRAME_CHANNELS, FRAME_SAMPLES, WHOLE_CLIP_CHANNELS, SampleCNN
from lightning_modules.networks.sample_cnn_se import SEGMENT_SAMPLES as SE_SEGMENT_SAMPLES
from lightning_modules.networks.sample_cnn_se import SampleCNNSE
from lightning_modules.networks.short_chunk import ShortChunkCNN
from lightning_modules.networks.tagging_transformer import TaggingTransformer


@dataclass(frozen=True)
class ModelSpec:
    """What `--model NAME` trains, and its defaults (the paper's where it gives them).

    `frame_samples`: fixed segment length for models that read chunks of a clip, waveform or Mel
    (None: the whole clip, or for Mel models the clip's frames split into `segments_per_clip`).
    `segments_per_clip`: segments per clip in evaluation (and in training with fixed crops);
    None for frame models means as many frames as cover the clip.
    `batch_size`: the paper does not give batch sizes; these are the SampleCNN paper's 23 for
    frames and what fits a 16 GB GPU comfortably for the rest.
    """

    name: str
    table: str
    network: type[nn.Module]
    frontend: MelConfig | None
    segments_per_clip: int | None
    frame_samples: int | None
    train_crop: str
    batch_size: int
    network_defaults: tuple[tuple[str, object], ...] = ()
    width_kwarg: str | None = None  # the network argument `--width` sets (None: the model has no base width)
    recipe: str = "paper"  # the `--recipe` used when none is given (experiments/recipes.py)


MODELS: dict[str, ModelSpec] = {
    "sample_cnn": ModelSpec("sample_cnn", "Table 1", SampleCNN, None, 1, None, "fixed", 16,
                            (("block_channels", list(WHOLE_CLIP_CHANNELS)), ("dropout", 0.5), ("frame_head", False))),
    "sample_cnn_frames": ModelSpec("sample_cnn_frames", "Lee et al. 2017 (3^9 model)", SampleCNN, None, None,
                                   FRAME_SAMPLES, "random", 23,
                                   (("block_channels", list(FRAME_CHANNELS)), ("dropout", 0.5), ("frame_head", True))),
    "mel_cnn": ModelSpec("mel_cnn", "Table 2", MelCNN, MelConfig(n_fft=2048, hop_length=1792, n_mels=128), 1, None,
                         "fixed", 32, (("dropout", 0.1),)),
    "lstm_mel": ModelSpec("lstm_mel", "Table 3", LSTMMel, MelConfig(n_fft=2048, hop_length=512, n_mels=128), 4, None,
                          "fixed", 32, (("dropout", 0.0),)),
    # From the literature (lightning_modules/networks/): Mel settings at 16 kHz as in Won et al. 2020's
    # reimplementations (96 bands, n_fft 512, hop 256), batch 16 as in Won's code; sample_cnn_se's batch of 23
    # and its non-overlapping test segments are Kim et al.'s; musicnn's 3 s patches cover the clip (10 of them).
    "fcn": ModelSpec("fcn", "Choi et al. 2016 (FCN, Won et al. 2020 widths)", FCN,
                     MelConfig(n_fft=512, hop_length=256, n_mels=96), 1, None, "fixed", 16, (("dropout", 0.5),),
                     recipe="won2020"),
    "crnn": ModelSpec("crnn", "Choi et al. 2017 (CRNN)", CRNN, MelConfig(n_fft=512, hop_length=256, n_mels=96),
                      1, None, "fixed", 16, (("dropout", 0.5),), recipe="won2020"),
    "musicnn": ModelSpec("musicnn", "Pons & Serra 2019 (musicnn, MTT_musicnn)", Musicnn,
                         MelConfig(n_fft=512, hop_length=256, n_mels=96), None, 3 * 16_000, "random", 16,
                         (("dropout", 0.5),), recipe="won2020"),
    "sample_cnn_se": ModelSpec("sample_cnn_se", "Kim et al. 2018 (SampleCNN + SE + multi-level)", SampleCNNSE,
                               None, None, SE_SEGMENT_SAMPLES, "random", 23, (("dropout", 0.5),),
                               recipe="won2020"),
}
# Won et al.: random chunks in training, 16 chunks averaged per clip in evaluation (8 for the transformer, as its
# authors' script); batch sizes from their code (16; the transformer's 32). Their Mel is torchaudio's (HTK scale, no
# filter norm), the suite's is Slaney with area norm: a per-band gain that the input batch norm absorbs.
MODELS.update({
    "short_chunk_cnn": ModelSpec(
        "short_chunk_cnn", "Won et al. 2020 (SMC), short-chunk CNN", ShortChunkCNN,
        MelConfig(n_fft=512, hop_length=256, n_mels=128), 16, short_chunk.CHUNK_SAMPLES, "random", 16,
        (("residual", False), ("dropout", 0.5)), width_kwarg="channels", recipe="won2020"),
    "short_chunk_resnet": ModelSpec(
        "short_chunk_resnet", "Won et al. 2020 (SMC), short-chunk ResNet", ShortChunkCNN,
        MelConfig(n_fft=512, hop_length=256, n_mels=128), 16, short_chunk.CHUNK_SAMPLES, "random", 16,
        (("residual", True), ("dropout", 0.5)), width_kwarg="channels", recipe="won2020"),
    "harmonic_cnn": ModelSpec(
        "harmonic_cnn", "Won et al. 2020 (ICASSP; SMC evaluation), Harmonic CNN", HarmonicCNN, None, 16,
        harmonic_cnn.CHUNK_SAMPLES, "random", 16, (("dropout", 0.5),), width_kwarg="channels", recipe="won2020"),
    "tagging_transformer": ModelSpec(
        "tagging_transformer", "Won et al. 2021 (ISMIR), music tagging transformer", TaggingTransformer,
        MelConfig(n_fft=1024, hop_length=512, n_mels=128), 8, tagging_transformer.CHUNK_SAMPLES, "random", 32,
        (("dropout", 0.1),), width_kwarg="channels", recipe="won2020"),
})

NETWORKS: dict[str, type[nn.Module]] = {
    "SampleCNN": SampleCNN, "MelCNN": MelCNN, "LSTMMel": LSTMMel,
    "FCN": FCN, "CRNN": CRNN, "Musicnn": Musicnn, "SampleCNNSE": SampleCNNSE,
    "ShortChunkCNN": ShortChunkCNN, "HarmonicCNN": HarmonicCNN, "TaggingTransformer": TaggingTransformer}


def segment_layout(spec: ModelSpec, clip_samples: int, frontend: MelConfig | None,
                   segments_per_clip: int | None = None, train_crop: str | None = None,
                   random_crops: int | None = None) -> SegmentLayout:
    """The segments `spec` reads from clips of `clip_samples`, with the user's overrides."""
    crop = train_crop or spec.train_crop
    if frontend is not None and spec.frame_samples is None:
        n = segments_per_clip or spec.segments_per_clip
        return SegmentLayout.for_mel_frames(clip_samples, frontend.hop_length, n, crop, random_crops)
    if spec.frame_samples is not None:  # fixed-length chunks (waveform frames or short Mel chunks)
        n = segments_per_clip or spec.segments_per_clip or max(1, math.ceil(clip_samples / spec.frame_samples))
        layout = SegmentLayout(spec.frame_samples, n, crop, random_crops)
    else:
        n = segments_per_clip or spec.segments_per_clip
        layout = SegmentLayout(clip_samples // n, n, crop, random_crops)
    layout.check_fits(clip_samples)
    return layout


def input_shape(frontend: MelConfig | None, layout: SegmentLayout) -> tuple[int, ...]:
    """Shape of one network input (no batch dimension): (samples,) or (n_mels, frames)."""
    if frontend is None:
        return (layout.segment_samples,)
    return (frontend.n_mels, frontend.n_frames(layout.segment_samples))


def network_config(spec: ModelSpec, shape: tuple[int, ...], n_tags: int, options=None) -> dict:
    """The JSON-able description of the network for these inputs (`build_network` takes it)."""
    kwargs = dict(spec.network_defaults)
    if spec.frontend is None:
        kwargs.update(n_samples=shape[0], n_tags=n_tags)
    else:
        kwargs.update(n_mels=shape[0], n_frames=shape[1], n_tags=n_tags)
    if options is not None and options.dropout is not None:
        kwargs["dropout"] = options.dropout
    if options is not None and options.input_norm:
        if spec.network is not LSTMMel:
            raise ConfigError(f"--input-norm applies to lstm_mel only ({spec.name} normalises with batch norm already)")
        kwargs["input_norm"] = True
    if options is not None and options.width is not None:
        if spec.width_kwarg is None:
            raise ConfigError(f"--width applies to models with a base channel width; {spec.name} has none")
        kwargs[spec.width_kwarg] = options.width
    return {"name": spec.name, "class": spec.network.__name__, "kwargs": kwargs}


def build_network(config: dict) -> nn.Module:
    """Instantiate the network a config describes (ConfigError for unknown or impossible ones)."""
    class_name = config.get("class")
    if class_name not in NETWORKS:
        raise ConfigError(f"unknown network {class_name!r} in config {config}")
    return NETWORKS[class_name](**config["kwargs"])
