"""Tracks for the ragged store's tests that need no audio files: a track's samples follow from its path.

A separate module because the SIGKILL test's writer runs in another interpreter and imports them from here.
"""

from __future__ import annotations

import time

import numpy as np

from datamodules.decoding import AudioDecodeError


def generated_decoder(path):
    """A deterministic decoder that needs no files: the track's samples follow from its path
    ("<seed>:<samples>"); path "bad:*" fails halfway, after writing a block."""
    seed, n = path.split(":")
    if seed == "bad":
        yield np.ones(1000, dtype=np.int16)
        raise AudioDecodeError(path, "decode_error", "fails halfway")
    rng = np.random.default_rng(int(seed))
    n, done = int(n), 0
    while done < n:
        size = min(100_000, n - done)
        yield rng.integers(-32768, 32768, size=size, dtype=np.int16)
        done += size


def slow_decoder(path):
    """`generated_decoder`, after 0.05 s: slow enough for a test to interrupt a store being written."""
    time.sleep(0.05)
    yield from generated_decoder(path)


def recording_decoder(decoded: list):
    """`generated_decoder`, appending each path it is asked for to ``decoded`` (in this process only)."""
    def decoder(path):
        decoded.append(path)
        yield from generated_decoder(path)
    return decoder


ITEMS = [(f"k{i}", f"{i}:{(i * 7919) % 60000 + 500}") for i in range(40)] + [("bad", "bad:0")] + \
        [(f"m{i}", f"{100 + i}:{(i * 104729) % 90000 + 1}") for i in range(20)]
