"""The one function that chooses a run's learning-rate schedule, from its options.

Which callbacks carry it out and in which order; the module never looks for them (it asks the optimiser
source this returns). The schedules' names are in `callbacks.schedule_names`.
"""

from __future__ import annotations

from callbacks.ema import EMAWeights
from callbacks.lr_decay import GlobalDecayRestart, LocalDecay
from callbacks.recipe_schedules import WarmupCosine, Won2020Stages


def build_schedule(options):
    """The callbacks that carry out the options' learning-rate schedule, and the one that chooses the optimiser.

    Returns (callbacks, optimiser_source): the paper's local decay (formula 1) and global restart (formula 2),
    or Won et al.'s stages, or warm-up + cosine; plus the EMA of the weights when asked for. `optimiser_source`
    is Won et al.'s stages (they change the optimiser at a switch and must name it again when a run resumes in
    a later stage) or None: the module asks it instead of looking through the Trainer's callbacks.
    """
    callbacks, source = [], None
    if options.schedule == "won2020":
        source = Won2020Stages(stage_epochs=options.stage_epochs, stage_lrs=options.stage_lrs,
                               momentum=options.momentum, weight_decay=options.weight_decay,
                               nesterov=options.nesterov, monitor=options.monitor, mode=options.monitor_mode)
        callbacks.append(source)
    elif options.schedule == "cosine":
        callbacks.append(WarmupCosine(warmup=options.warmup))
    if options.ema_decay > 0:
        callbacks.append(EMAWeights(options.ema_decay))
    if options.local_decay > 0:
        callbacks.append(LocalDecay(decay=options.local_decay, formula=options.local_decay_formula))
    if options.max_restarts >= 0 and options.patience > 0:
        callbacks.append(GlobalDecayRestart(
            monitor=options.monitor, mode=options.monitor_mode, patience=options.patience,
            global_decay=options.global_decay, max_restarts=options.max_restarts,
            schedule=options.global_decay_schedule))
    return callbacks, source
