"""Training recipes (`--recipe paper|won2020|modern`): named defaults for optimiser, schedule, crops and augmentation.

A recipe is a mapping from option names (those of `experiments.options`) to values. It is
applied in one place, `recipe_changes` (called by `experiments.cli.parse_command` once the
model is known, before the options are built), to the options that were *not* given on the command
line or in a `--config` file, so any explicit flag wins. The result is an ordinary `RunOptions`: the run folder's
`config.json`/`config.yaml` hold the resolved values, `--resume` and `--evaluate` read them back
without applying any recipe again, and the run folder's name (the digest of the identity options)
follows from the resolved values, not from the recipe's name: `--recipe paper` on the paper's
models is the same run as no `--recipe` at all.

Every recipe trains on one random crop per clip in an epoch (`random_crops_per_clip` 1) when the model
reads random crops, so that an epoch is one pass over the training clips under every recipe and
`--max-epochs` means the same amount of data whichever recipe a comparison uses; more crops per clip
is the explicit `--random-crops-per-clip N`.

* `paper`: the suite's declared defaults (SGD 0.01, momentum 0.9, the local and global decay);
  `tests/unit/experiments/test_recipes.py` checks that it equals them.
* `won2020`: Won et al. 2020 (minzwon/sota-music-tagging-models, training/solver.py and
  main.py): Adam 1e-4 with weight decay 1e-4 for 80 epochs, then the best weights reloaded and
  SGD + Nesterov (momentum 0.9, weight decay 1e-4) at 1e-3, 1e-4 after 20 more epochs and 1e-5
  after 20 more, each switch reloading the best weights; 200 epochs; one random chunk per clip
  in each training epoch (their loader's epoch: each clip once, whatever the evaluation averages);
  model selection on validation loss; evaluation averages the model's chunks per clip (its
  `--segments-per-clip`).
* `modern`: AdamW 1e-3 (weight decay 0.01), 5% linear warm-up then cosine decay to zero, mixup
  (alpha 0.2), SpecAugment (two frequency masks up to 15% of the bands, two time masks up to 10%
  of the frames; Mel models only: waveform models get no masks), an EMA of the weights (decay
  0.999) for validation, checkpoints and test, gradient clipping at norm 1, and bf16-mixed
  precision when the run trains on a GPU (32-bit on the CPU).
"""

from __future__ import annotations

from types import MappingProxyType

from infrastructure.devices import gpu_count
from infrastructure.errors import ConfigError
from lightning_modules.registry import model_spec

RECIPES = MappingProxyType({
    "paper": MappingProxyType({
        "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False,
        "schedule": "paper", "local_decay": 1e-6, "patience": 3, "global_decay": 0.2, "max_restarts": 4,
        "monitor": "val/loss", "monitor_mode": "min", "max_epochs": 100, "random_crops_per_clip": 1}),
    "won2020": MappingProxyType({
        "optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "momentum": 0.9, "nesterov": True,
        "schedule": "won2020", "stage_epochs": (80, 20, 20), "stage_lrs": (1e-3, 1e-4, 1e-5),
        "local_decay": 0.0, "patience": 0, "max_epochs": 200, "train_crop": "random", "random_crops_per_clip": 1,
        "monitor": "val/loss", "monitor_mode": "min"}),
    "modern": MappingProxyType({
        "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "schedule": "cosine", "warmup": 0.05,
        "local_decay": 0.0, "patience": 0, "mixup_alpha": 0.2, "freq_mask": 0.15, "time_mask": 0.1, "n_masks": 2,
        "ema_decay": 0.999, "gradient_clip": 1.0, "monitor": "val/loss", "monitor_mode": "min",
        "random_crops_per_clip": 1}),
})
MEL_ONLY = ("freq_mask", "time_mask", "n_masks")
"""Recipe options that act on a spectrogram: a recipe leaves them at their defaults (off) for waveform models."""


def default_recipe(model: str) -> str:
    """The recipe of `model`'s registry entry."""
    return model_spec(model).recipe


def recipe_values(name: str, model: str, accelerator: str = "auto") -> dict:
    """The option values recipe `name` sets for `model` trained on `accelerator`."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    values = dict(RECIPES[name])
    if model_spec(model).frontend is None:
        for key in MEL_ONLY:
            values.pop(key, None)
    if name == "modern":
        accelerator = str(accelerator or "auto").lower()
        gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpu_count() > 0)
        values["precision"] = "bf16-mixed" if gpu else "32"
    return values


def recipe_changes(given: dict, model: str | None) -> dict:
    """The values the recipe sets: every option of its own that is not in `given` (the options given on the
    command line or in --config files, name -> value), and `recipe`, its name.

    Without a model (e.g. `--resume`, `--evaluate`) nothing: saved runs hold resolved values already.
    """
    if not model:
        if "recipe" in given:
            raise ConfigError("--recipe applies to training a --model (or a --sweep MODEL); a resumed or evaluated "
                              "run keeps the values it was trained with")
        return {}
    name = given.get("recipe") or default_recipe(model)
    values = {k: v for k, v in recipe_values(name, model, given.get("accelerator", "auto")).items() if k not in given}
    crop = values.get("train_crop", given.get("train_crop")) or model_spec(model).train_crop
    if "random_crops_per_clip" in values and crop != "random":
        del values["random_crops_per_clip"]  # e.g. an explicit --train-crop fixed: training reads the fixed segments
    return {**values, "recipe": name}
