"""Lightning callbacks of the suite, one concern per module.

* `callbacks.lr_decay`: the paper's two-level learning-rate decay (section 4.5), `LocalDecay` and
  `GlobalDecayRestart`, which share the epoch-start rate through the param-group key `GLOBAL_LR_KEY`;
* `callbacks.recipe_schedules`: Won et al.'s optimiser stages and the warm-up + cosine schedule;
* `callbacks.schedule_names`: the schedules' names (read by the command line without Lightning); `callbacks.schedules`:
  the one function that chooses a run's schedule;
* `callbacks.rng_state`: RNG states in checkpoints, for exact resume; `callbacks.step_seeds`: every training
  step's random numbers from (seed, epoch, batch, rank);
* `callbacks.progress_bar`: the training bar on stderr, fitted to the terminal, and `tell` for lines above it;
* `callbacks.ema`, `callbacks.history`, `callbacks.sync_buffers`, `callbacks.test_predictions`.

Nothing is imported here: importing one callback module must not load the others (or Lightning, for
`callbacks.schedule_names`).
"""
