"""The names of the learning-rate schedules a run can follow, read by the command line without Lightning.

The callbacks that carry them out are `callbacks.lr_decay` (the paper's two-level decay) and
`callbacks.recipe_schedules` (Won et al.'s stages, warm-up and cosine); `callbacks.schedules` chooses a run's.
"""

SCHEDULES = ("paper", "won2020", "cosine")
"""--schedule: the paper's local and global decay; Won et al.'s optimiser stages; linear warm-up then cosine."""

LOCAL_DECAY_FORMULAS = ("paper", "keras")
"""Formula (1) as printed (compounding), or Keras's lr0 / (1 + d * i)."""

GLOBAL_DECAY_SCHEDULES = ("paper", "sample_cnn")
"""Formula (2) as printed (compounding per restart), or the SampleCNN paper's lr0 x decay^k."""
