"""EpochSampler: which items a rank reads in an epoch, and in what order, from (seed, epoch) alone."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Yields `(item, epoch)` pairs: this rank's share of the items, in an order fixed by (seed, epoch).

    Training (`pad=True`) shuffles and pads by repeating items so every rank runs the same number
    of batches, as DDP's gradient all-reduce requires. Evaluation (`shuffle=False, pad=False`)
    deals items round-robin with no duplicates; ranks may then differ by one item.
    The epoch travels with each item so that random crops depend only on (seed, epoch, item).
    """

    def __init__(self, n_items: int, *, shuffle: bool, pad: bool, seed: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n_items, self.shuffle, self.pad, self.seed = n_items, shuffle, pad, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        if self.shuffle:
            return np.random.default_rng([self.seed, self.epoch]).permutation(self.n_items)
        return np.arange(self.n_items)

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.n_items / self.world_size)
        return len(range(self.rank, self.n_items, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self._order()
        if self.pad:
            total = len(self) * self.world_size
            order = np.resize(order, total)  # repeats from the start to fill the last round
        for item in order[self.rank :: self.world_size]:
            yield int(item), self.epoch


LOADER_STAGES = ("train", "valid", "test")


def loader_generator(seed: int, stage: str, rank: int = 0) -> torch.Generator:
    """A DataLoader's own generator, seeded from (seed, stage, rank).

    Each time a DataLoader iterator is created, torch draws the workers' base seed from the
    loader's `generator`, or from the global torch generator when it has none. The global draw
    shifts every later random number of the process (dropout masks) by an amount that depends
    on how many iterators were created so far: with persistent workers an uninterrupted run
    creates the training iterator once, a resumed one again after its restart, so the two
    diverged. With its own generator a loader never touches the global stream, and its workers'
    seeds follow from (seed, stage, rank) alone.
    """
    key = np.random.SeedSequence([int(seed) % (1 << 64), LOADER_STAGES.index(stage), int(rank)])
    return torch.Generator().manual_seed(int(key.generate_state(1, dtype=np.uint64)[0] >> 1))
