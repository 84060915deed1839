"""`python -m tests.support.kill_during STAGE[:N] EPOCH BATCH RUN_PY_OPTIONS...`: run.py, SIGKILLed at a chosen point.

The resume tests need a kill at an exact place (early in an epoch, in the middle of validation)
that a timer outside the process cannot hit reliably on a loaded machine. This runs
`run_experiment` with the options run.py would parse, plus one callback that sends SIGKILL to
its own process when training reaches batch BATCH of epoch EPOCH in STAGE ("train" or
"validation"; the sanity check does not count), the N-th time it gets there (default the first: with
`--rounds`, whose rounds run one after another in the process, `train:2` is the second round). SIGKILL
cannot be caught: the process dies there with no cleanup, exactly as if the OOM killer or a preemption had
hit it. The callback saves no state, so nothing of it reaches the checkpoints.
"""

from __future__ import annotations

import os
import signal
import sys

from lightning.pytorch.callbacks import Callback

STAGES = ("train", "validation")


class KillAt(Callback):
    """SIGKILL this process at the start of batch `batch` of epoch `epoch` of `stage`, the `occurrence`-th time."""

    def __init__(self, stage: str, epoch: int, batch: int, occurrence: int = 1):
        if stage not in STAGES:
            raise ValueError(f"stage {stage!r}: expected one of {STAGES}")
        self.stage, self.epoch, self.batch, self.occurrence = stage, epoch, batch, occurrence
        self.reached = 0

    def _maybe_kill(self, trainer, stage: str, batch_idx: int) -> None:
        if stage == self.stage and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self.reached += 1
            if self.reached < self.occurrence:
                return
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._maybe_kill(trainer, "train", batch_idx)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._maybe_kill(trainer, "validation", batch_idx)


def main(argv: list[str]) -> int:
    import run
    from experiments.train import run_experiment

    where, epoch, batch, *argv = argv
    stage, _, occurrence = where.partition(":")
    killer = KillAt(stage, int(epoch), int(batch), int(occurrence or 1))
    options = run.parse_options(argv)
    if options.rounds > 1:
        from experiments.rounds import run_rounds

        run_rounds(options, extra_callbacks=(killer,))
    else:
        run_experiment(options, extra_callbacks=(killer,))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
