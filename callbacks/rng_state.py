"""Random-number-generator state in checkpoints, for exact resume.

Lightning saves the model, optimizer, loops and callback states, but not the RNG states. A run
resumed from a checkpoint therefore draws other dropout masks and other shuffles than an
uninterrupted run. :class:`RNGStateCheckpoint` stores the states in the checkpoint (as its
callback state) and puts them back on resume.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def capture_rng_states() -> dict[str, Any]:
    """Current states of python ``random``, numpy's global RNG, torch CPU and (if available) CUDA.

    Everything is a tensor, number, string, tuple or list, so the result survives
    ``torch.load(weights_only=True)`` (Lightning's default when resuming).
    """
    bit_generator, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(bit_generator),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back states captured by :func:`capture_rng_states`.

    CUDA states are restored for as many devices as both the checkpoint and this machine have; a
    checkpoint without CUDA states leaves the CUDA generators alone (with a warning if CUDA is
    available here).
    """
    random.setstate(states["python"])
    np_state = states["numpy"]
    np.random.set_state(
        (
            np_state["bit_generator"],
            np_state["key"].numpy().astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["gauss"]),
        )
    )
    torch.set_rng_state(states["torch"].cpu())
    cuda_states = states.get("cuda")
    if torch.cuda.is_available():
        if cuda_states is None:
            warnings.warn(
                "RNGStateCheckpoint: the checkpoint holds no CUDA RNG state (written without CUDA); "
                "the CUDA generators keep their current state",
                stacklevel=2,
            )
            return
        count = min(len(cuda_states), torch.cuda.device_count())
        if count != len(cuda_states) or count != torch.cuda.device_count():
            warnings.warn(
                f"RNGStateCheckpoint: the checkpoint holds CUDA RNG states for {len(cuda_states)} devices, "
                f"this machine has {torch.cuda.device_count()}; restoring the first {count}",
                stacklevel=2,
            )
        for device in range(count):
            torch.cuda.set_rng_state(cuda_states[device].cpu(), device)


class RNGStateCheckpoint(Callback):
    """Saves the RNG states in every checkpoint and restores them on resume.

    ``state_dict()`` captures python ``random``, numpy's global RNG, torch CPU and (if CUDA is
    available) all CUDA generator states at the moment the checkpoint is written;
    ``load_state_dict()`` restores them. Lightning calls ``load_state_dict`` while it restores
    the checkpoint, before it creates the first training-data iterator and before the first
    training step.

    That alone does not make a resume exact: what the two processes do between the checkpoint
    and the next training step differs (a resumed process creates its DataLoader iterators
    again, and each creation draws from the global torch generator unless the loader has a
    generator of its own). The suite therefore also reseeds every training step from (seed,
    epoch, batch, rank) (:class:`callbacks.step_seeds.StepSeeds`) and gives its loaders their own
    generators (``datamodules.sampling.loader_generator``); the states kept here cover whatever
    else draws from the global generators between steps.

    Limits: under DDP the checkpoint holds rank 0's states and every rank restores those (ranks
    seeded alike by ``seed_everything`` that consumed the same amount of randomness hold equal
    states anyway). A mid-epoch checkpoint restores the RNG, but Lightning restarts a
    non-resumable data iterator, so that resume is not exact.
    """

    def state_dict(self) -> dict[str, Any]:
        """The RNG states right now (called by Lightning when it writes a checkpoint)."""
        return capture_rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the RNG states from :meth:`state_dict`'s output."""
        restore_rng_states(state_dict)
