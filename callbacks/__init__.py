"""Lightning callbacks of the suite.

* :class:`LocalDecay`, :class:`GlobalDecayRestart`: the paper's two-level learning-rate decay
  (section 4.5); they share the epoch-start rate through the param-group key
  :data:`GLOBAL_LR_KEY`.
* :class:`RNGStateCheckpoint`: RNG states in checkpoints, for exact resume.
* :class:`StepSeeds`: every training step's random numbers from (seed, epoch, batch, rank).
"""

from callbacks.lr_decay import GLOBAL_LR_KEY, GlobalDecayRestart, LocalDecay
from callbacks.rng_state import RNGStateCheckpoint, capture_rng_states, restore_rng_states
from callbacks.step_seeds import StepSeeds

__all__ = [
    "GLOBAL_LR_KEY",
    "GlobalDecayRestart",
    "LocalDecay",
    "RNGStateCheckpoint",
    "StepSeeds",
    "capture_rng_states",
    "restore_rng_states",
]
