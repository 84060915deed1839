"""Which process this is under DDP or SLURM, read from the environment before any Trainer exists."""

from __future__ import annotations

import os


def local_rank() -> int:
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 0


def is_global_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0))) == 0 and local_rank() == 0
