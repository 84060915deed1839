"""How a TaggingModule optimises: the optimisers it can build, and what it does with a non-finite loss.

The names are read by the command line, which must start without importing torch; torch is imported
when an optimiser is built.
"""

from __future__ import annotations

OPTIMIZERS = ("sgd", "adam", "adamw")
"""--optimizer: the paper's SGD (with momentum, optionally Nesterov), Adam, or AdamW (decoupled weight decay)."""

NONFINITE_ACTIONS = ("stop", "skip")
"""--nonfinite-loss: stop the run with a message naming the step, or skip the batch."""


def build_optimizer(parameters, name: str, *, lr: float, momentum: float, weight_decay: float, nesterov: bool):
    """The optimiser `name` over `parameters` with these settings (momentum and Nesterov apply to SGD)."""
    import torch

    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
