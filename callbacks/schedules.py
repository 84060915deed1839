"""The learning-rate schedules a run can follow, by name.

Only names live here, so that the command line can offer them without importing Lightning: the callbacks
that carry them out are `callbacks.lr_decay` (the paper's two-level decay) and `callbacks.recipe_schedules`
(Won et al.'s stages, warm-up and cosine).
"""

SCHEDULES = ("paper", "won2020", "cosine")
"""--schedule: the paper's local and global decay; Won et al.'s optimiser stages; linear warm-up then cosine."""

LOCAL_DECAY_FORMULAS = ("paper", "keras")
"""Formula (1) as printed (compounding), or Keras's lr0 / (1 + d * i)."""

GLOBAL_DECAY_SCHEDULES = ("paper", "sample_cnn")
"""Formula (2) as printed (compounding per restart), or the SampleCNN paper's lr0 x decay^k."""
