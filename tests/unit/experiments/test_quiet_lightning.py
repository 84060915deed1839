"""Lightning's chatter is silenced at its source; the warnings that mean something is wrong are kept."""

from __future__ import annotations

import logging
import warnings

import pytest
from lightning.fabric.utilities.warnings import PossibleUserWarning

from experiments.trainer import LIGHTNING_LOGGERS, quiet_lightning

DROPPED = [
    ("The number of training batches (2) is smaller than the logging interval Trainer(log_every_n_steps=50).",
     "lightning.pytorch.loops.fit_loop"),
    ("The 'train_dataloader' does not have many workers which may be a bottleneck.",
     "lightning.pytorch.trainer.connectors.data_connector"),
    ("Checkpoint directory /runs/x/checkpoints exists and is not empty.", "lightning.pytorch.callbacks.model_checkpoint"),
    ("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()` "
     "instead.", "lightning.pytorch.utilities._pytree"),
]
SRUN = ("The `srun` command is available on your system but is not used. HINT: ...",
        "lightning.fabric.plugins.environments.slurm")
KEPT = [
    ("GPU available but not used. You can set it by doing `Trainer(accelerator='gpu')`.",
     "lightning.pytorch.trainer.setup"),
    ("Experiment logs directory logs exists and is not empty. Previous log files in this directory will be deleted "
     "when the new ones are saved!", "lightning.fabric.loggers.csv_logs"),
    # the same words from the suite's own code are not Lightning's: kept
    ("The number of training batches (2) is smaller than the logging interval", "experiments.train"),
]


@pytest.fixture
def lightning_levels():
    before = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


def _shown(in_slurm_job: bool, monkeypatch) -> list[str]:
    if in_slurm_job:
        monkeypatch.setenv("SLURM_JOB_ID", "42")
    else:
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()
        for message, module in [*DROPPED, SRUN, *KEPT]:
            warnings.warn_explicit(message, PossibleUserWarning, module.replace(".", "/") + ".py", 1, module=module)
    return [str(w.message) for w in caught]


def test_unactionable_warnings_go_and_the_others_stay(monkeypatch, lightning_levels):
    assert _shown(False, monkeypatch) == [message for message, _ in KEPT]
    # inside a SLURM allocation, a run started without srun is a real mistake: that warning stays
    assert _shown(True, monkeypatch) == [SRUN[0]] + [message for message, _ in KEPT]


def test_lightning_info_lines_go_and_its_warnings_stay(lightning_levels):
    quiet_lightning()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.distributed"):
        logger = logging.getLogger(name)
        assert not logger.isEnabledFor(logging.INFO) and logger.isEnabledFor(logging.WARNING)
