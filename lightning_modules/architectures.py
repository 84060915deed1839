"""One named LightningModule per registered model, each a `TaggingModule` with its registry entry's defaults.

`MelCNNModule()` is a working module for MTAT's 29.1 s clips and 50 tags (Table 2's network,
its Mel settings and segment layout); `MelCNNModule(tags=datamodule.tags)` trains on a data
module's vocabulary; `MelCNNModule.load_from_checkpoint(path)` restores a trained model without
the data (the checkpoint's hyperparameters replace every default). The step function, metrics
and thresholds are TaggingModule's: nothing is repeated here. `run.py --model NAME` builds
`module_class(NAME)`, so a run's checkpoint loads with its architecture's class and with
`TaggingModule` alike.

The classes follow from the registry (lightning_modules/registry.py): each entry's class is made
on first use, named by the entry (`ModelSpec.module_name`), and kept, so `module_class(name)` is
always the same class. `from lightning_modules.architectures import MelCNNModule` and pickling
(a class is found by its module and name) reach them through this module's `__getattr__`; a model
registered later (a test's toy network) gets its class the same way. A checkpoint stores the
hyperparameters only, never the class, so which class loads it does not depend on how it was made.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from infrastructure.audio import MTAT_CLIP_SAMPLES, SAMPLE_RATE
from infrastructure.errors import ConfigError
from lightning_modules.registry import MODELS, input_shape, model_spec, network_config, segment_layout
from lightning_modules.tagging_module import TaggingModule

DEFAULT_N_TAGS = 50


def default_hparams(model: str, tags: list[str] | None = None, clip_samples: int = MTAT_CLIP_SAMPLES) -> dict:
    """network_config, tags, frontend and layout of `model` for clips of `clip_samples` (registry defaults)."""
    spec = model_spec(model)
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
            held = network_config.get("name")
            loader = module_class(held).__name__ if held in MODELS else "TaggingModule"
            raise ConfigError(f"{type(self).__name__} holds {self.MODEL}, not {held}: "
                              f"load this checkpoint with {loader} or TaggingModule")
        if frontend is None and layout is None:
            frontend = defaults.get("frontend")
        super().__init__(network=network, network_config=network_config,
                         tags=tags if tags is not None else defaults["tags"], frontend=frontend,
                         layout=layout or defaults["layout"], sample_rate=sample_rate, **training)


_CLASSES: dict[str, type[TaggingModule]] = {}


def module_class(model: str) -> type[TaggingModule]:
    """The LightningModule class of registry model `model` (made on first use, then always the same)."""
    spec = model_spec(model)
    cls = _CLASSES.get(spec.name)
    if cls is None or cls.__name__ != spec.module_name:
        doc = f"{spec.description or spec.table}\n\n    The registry's `{spec.name}` model (lightning_modules/registry.py)."
        cls = type(spec.module_name, (_ArchitectureModule,), {"MODEL": spec.name, "__doc__": doc,
                                                              "__module__": __name__,
                                                              "__qualname__": spec.module_name})
        _CLASSES[spec.name] = cls
    return cls


class _Modules(Mapping):
    """Model name -> its LightningModule class, for every registered model (follows `MODELS`)."""

    def __getitem__(self, model: str) -> type[TaggingModule]:
        if model not in MODELS:
            raise KeyError(model)
        return module_class(model)

    def __iter__(self) -> Iterator[str]:
        return iter(list(MODELS))

    def __len__(self) -> int:
        return len(MODELS)


MODULES: Mapping[str, type[TaggingModule]] = _Modules()


def __getattr__(name: str):
    """`MelCNNModule` and the other registered models' classes, by their class names."""
    for spec in list(MODELS.values()):
        if spec.module_name == name:
            return module_class(spec.name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *(spec.module_name for spec in MODELS.values())})
