"""One named LightningModule per architecture, each a `TaggingModule` with its publication's defaults.

`MelCNNModule()` is a working module for MTAT's 29.1 s clips and 50 tags (Table 2's network,
its Mel settings and segment layout); `MelCNNModule(tags=datamodule.tags)` trains on a data
module's vocabulary; `MelCNNModule.load_from_checkpoint(path)` restores a trained model without
the data (the checkpoint's hyperparameters replace every default). The step function, metrics
and thresholds are TaggingModule's: nothing is repeated here. `run.py --model NAME` builds
`module_class(NAME)`, so a run's checkpoint loads with its architecture's class and with
`TaggingModule` alike.
"""

from __future__ import annotations

from infrastructure.audio import MTAT_CLIP_SAMPLES, SAMPLE_RATE
from infrastructure.errors import ConfigError
from lightning_modules.registry import MODELS, input_shape, network_config, segment_layout
from lightning_modules.tagging_module import TaggingModule

DEFAULT_N_TAGS = 50


def default_hparams(model: str, tags: list[str] | None = None, clip_samples: int = MTAT_CLIP_SAMPLES) -> dict:
    """network_config, tags, frontend and layout of `model` for clips of `clip_samples` (registry defaults)."""
    spec = MODELS[model]
    tags = list(tags) if tags is not None else [f"tag{i:02d}" for i in range(DEFAULT_N_TAGS)]
    layout = segment_layout(spec, clip_samples, spec.frontend)
    return {"network_config": network_config(spec, input_shape(spec.frontend, layout), len(tags)), "tags": tags,
            "frontend": spec.frontend.to_dict() if spec.frontend is not None else None, "layout": layout.to_dict()}


class _ArchitectureModule(TaggingModule):
    """A TaggingModule whose missing network, tags, frontend and layout come from `MODEL`'s registry entry."""

    MODEL: str = ""

    def __init__(self, network=None, network_config: dict | None = None, tags: list[str] | None = None,
                 frontend: dict | None = None, layout: dict | None = None, sample_rate: int = SAMPLE_RATE,
                 **training):
        defaults = default_hparams(self.MODEL, tags) if network_config is None or layout is None else {}
        network_config = network_config or defaults["network_config"]
        if network_config.get("name") != self.MODEL:
            raise ConfigError(f"{type(self).__name__} holds {self.MODEL}, not {network_config.get('name')}: "
                              f"load this checkpoint with {MODULES[network_config.get('name')].__name__} "
                              "or TaggingModule")
        if frontend is None and layout is None:
            frontend = defaults.get("frontend")
        super().__init__(network=network, network_config=network_config,
                         tags=tags if tags is not None else defaults["tags"], frontend=frontend,
                         layout=layout or defaults["layout"], sample_rate=sample_rate, **training)


class SampleCNNModule(_ArchitectureModule):
    """SampleCNN on whole 29.1 s waveforms (the paper's Table 1)."""

    MODEL = "sample_cnn"


class SampleCNNFramesModule(_ArchitectureModule):
    """SampleCNN on 59,049-sample frames averaged per clip (Lee et al. 2017, the 3^9 model)."""

    MODEL = "sample_cnn_frames"


class MelCNNModule(_ArchitectureModule):
    """2D CNN on the clip's log-Mel spectrogram (the paper's Table 2)."""

    MODEL = "mel_cnn"


class LSTMMelModule(_ArchitectureModule):
    """BiLSTM + Conv1D on log-Mel frames, 4 segments averaged per clip (the paper's Table 3)."""

    MODEL = "lstm_mel"


class ShortChunkCNNModule(_ArchitectureModule):
    """Won et al. 2020's short-chunk CNN: 3.69 s log-Mel chunks, 16 averaged per clip."""

    MODEL = "short_chunk_cnn"


class ShortChunkResNetModule(_ArchitectureModule):
    """Won et al. 2020's short-chunk ResNet (residual blocks), the strongest of their from-scratch models."""

    MODEL = "short_chunk_resnet"


class HarmonicCNNModule(_ArchitectureModule):
    """Won et al. 2020's Harmonic CNN: learnable harmonic filters on the STFT of 5 s waveform chunks."""

    MODEL = "harmonic_cnn"


class TaggingTransformerModule(_ArchitectureModule):
    """Won et al. 2021's tagging transformer: a CNN front-end on Mel chunks, a transformer encoder, CLS output."""

    MODEL = "tagging_transformer"


class FCNModule(_ArchitectureModule):
    """Choi et al. 2016's fully convolutional network on the whole clip's log-Mel spectrogram."""

    MODEL = "fcn"


class CRNNModule(_ArchitectureModule):
    """Choi et al. 2017's convolutional recurrent network (4 conv layers, 2-layer GRU)."""

    MODEL = "crnn"


class MusicnnModule(_ArchitectureModule):
    """Pons & Serra 2019's musicnn: timbral and temporal front-end filters, dense mid-end, pooled back-end."""

    MODEL = "musicnn"


class SampleCNNSEModule(_ArchitectureModule):
    """Kim et al. 2018's SampleCNN with squeeze-and-excitation and multi-level aggregation."""

    MODEL = "sample_cnn_se"


MODULES: dict[str, type[TaggingModule]] = {
    cls.MODEL: cls for cls in (SampleCNNModule, SampleCNNFramesModule, MelCNNModule, LSTMMelModule,
                               FCNModule, CRNNModule, MusicnnModule, SampleCNNSEModule,
                               ShortChunkCNNModule, ShortChunkResNetModule, HarmonicCNNModule,
                               TaggingTransformerModule)}


def module_class(model: str) -> type[TaggingModule]:
    """The LightningModule class of registry model `model`."""
    if model not in MODULES:
        raise ConfigError(f"no LightningModule for model {model!r}; known: {', '.join(MODULES)}")
    return MODULES[model]
