"""Constructor-argument checks shared by the networks: one rule and one message format per kind.

Each raises `ConfigError` naming the model and the argument, e.g.
``mel_cnn: channels entry must be a positive integer, got 0``.
"""

from __future__ import annotations

from collections.abc import Sequence

from infrastructure.errors import ConfigError


def check_int(model: str, option: str, value: object, minimum: int = 1) -> int:
    """``value`` when it is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{model}: {option} must be {wanted}, got {value!r}")
    return value


def check_channels(model: str, option: str, channels: Sequence[int]) -> tuple[int, ...]:
    """A non-empty tuple of positive channel counts, one per block."""
    channels = tuple(channels)
    if not channels:
        raise ConfigError(f"{model}: {option} must name at least one block")
    for count in channels:
        check_int(model, f"{option} entry", count)
    return channels


def check_dropout(model: str, dropout: float) -> float:
    """A dropout probability in [0, 1)."""
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"{model}: dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)
