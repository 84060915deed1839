"""What keeps the run folders of earlier versions of the suite valid: their names, configs and studies.

A run folder is named by a digest of its identity options (`experiments.run_folder.config_digest`), and a
sweep's study by a digest of its fixed options. Rerunning a command must find the folder (or study) an
earlier version made for it, so the dictionary those digests are taken of must stay what it was. Two things
changed it since the first run folders, and both are undone here, in one place:

* options added later (`ADDED_OPTIONS`): at their declared default they are left out of the dictionary,
  since older runs, which never had them, ran as that default does; set to anything else they are part of it
  as usual;
* keys the dictionary of earlier versions carried although they select a mode, not a run
  (`LEGACY_KEYS`): kept with their constant values. A saved config.json may hold them; they are ignored
  when it is read back.
"""

from __future__ import annotations

ADDED_OPTIONS = frozenset({
    "width", "dataset", "jamendo_split", "jamendo_subset", "jamendo_quality", "jamendo_meta", "excerpt_seconds",
    "jamendo_clip_samples", "synthetic_tracks", "synthetic_min_seconds", "synthetic_max_seconds",
    "random_crops_per_clip", "recipe", "schedule", "warmup", "stage_epochs", "stage_lrs", "mixup_alpha", "freq_mask",
    "time_mask", "n_masks", "ema_decay", "gradient_clip", "compile_backend", "teacher", "distill_weight",
    "distill_temperature", "unlabeled", "unlabeled_ratio", "rounds"})
"""Identity options that came after run folders existed (`compatible_dict` leaves them out at their default)."""

LEGACY_KEYS = {"download": None, "download_url": None, "resume": None, "summary": False}
"""Mode keys of the earlier options dictionary, with the constant values it held."""

SAVED_ONLY_KEYS = frozenset({"resolved", "evaluated_checkpoint", "teacher_identity"})
"""Keys a saved config.json holds beside the options (not options)."""


def compatible_dict(values: dict, defaults: dict) -> dict:
    """The options `values` (name -> value) as the digests and config.json of every version hold them."""
    out = {k: v for k, v in values.items() if not (k in ADDED_OPTIONS and v == defaults[k])}
    out.update(LEGACY_KEYS)
    return out


def ignored_saved_keys() -> frozenset[str]:
    """Keys of a saved configuration that are not options and are read past."""
    return frozenset(LEGACY_KEYS) | SAVED_ONLY_KEYS
