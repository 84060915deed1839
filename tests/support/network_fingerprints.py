"""Fingerprints of every registered model's network: what a refactor must leave unchanged.

For each model: its default network (MTAT clips, 50 tags) and its CPU-sized variant (the tests' small runs), each
built after `torch.manual_seed(0)`: a digest of the network config and of the state_dict (keys, shapes, bytes: the
parameter creation order and the initial weights), and for the small variant the outputs on a fixed input in eval
mode and in train mode (dropout drawn after `torch.manual_seed(2)`) and the gradients of a fixed loss; plus a digest
of the model's sweep space and baselines (a sweep's default study name depends on the space).

tests/unit/lightning_modules/test_network_fingerprints.py compares them with the values the code before the
network refactor gave (commit 2f67a39). `python tests/support/network_fingerprints.py` prints the current ones in
that test's format (one thread, as they were recorded).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def digest(value) -> str:
    """Short sha256 of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def state_digest(network: nn.Module) -> str:
    """Short sha256 of the state_dict: its keys, shapes and bytes, in order."""
    sha = hashlib.sha256()
    for key, tensor in network.state_dict().items():
        sha.update(key.encode())
        sha.update(str(tuple(tensor.shape)).encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()[:16]


def _summary(values: torch.Tensor) -> list[float]:
    """Sum, absolute sum and a linearly weighted sum (which notices reordered values)."""
    values = values.detach().double().flatten()
    weights = torch.linspace(-1.0, 1.0, values.numel(), dtype=torch.float64)
    return [round(float(values.sum()), 6), round(float(values.abs().sum()), 6), round(float((values * weights).sum()), 6)]


def outputs_fingerprint(network: nn.Module, shape) -> dict:
    """Eval-mode and train-mode outputs on a fixed input of `shape` examples, and the gradients of a fixed loss."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((3, *shape), generator=generator)
    x = x * 20 - 40 if len(shape) == 2 else x * 0.1  # dB-like Mel values, or a quiet waveform
    network.eval()
    with torch.no_grad():
        eval_out = network(x)
    network.train()
    torch.manual_seed(2)
    train_out = network(x)
    target = (torch.arange(train_out.numel()).reshape(train_out.shape) % 3 == 0).float()
    nn.functional.binary_cross_entropy_with_logits(train_out, target).backward()
    grads = torch.cat([p.grad.flatten() for p in network.parameters() if p.grad is not None])
    return {"eval": _summary(eval_out), "train": _summary(train_out), "grad": _summary(grads)}


def small_setup(name: str) -> tuple[dict, tuple[int, ...]]:
    """(network config, input shape) of model `name`'s CPU-sized variant, as its tests' runs build it."""
    import run
    from experiments.resolve import mel_settings, network_overrides
    from lightning_modules.registry import input_shape, model_spec, network_config, segment_layout
    from tests.support.helpers import CHUNK_CLIP_SAMPLES, TINY_CLIP_SAMPLES, small_model_args

    spec = model_spec(name).small_variant()
    options = run.parse_options(["--model", name, *small_model_args(name)])
    clip = TINY_CLIP_SAMPLES if (spec.frame_samples or 0) <= TINY_CLIP_SAMPLES else CHUNK_CLIP_SAMPLES
    frontend = mel_settings(spec, options)
    layout = segment_layout(spec, clip, frontend, options.segments_per_clip, options.train_crop,
                            options.random_crops_per_clip)
    shape = input_shape(frontend, layout)
    return network_config(spec, shape, options.n_tags, **network_overrides(options)), shape


def fingerprint(name: str) -> dict:
    from lightning_modules.architectures import default_hparams
    from lightning_modules.registry import build_network
    from sweeps.spaces import BASELINES, SPACES

    config = default_hparams(name)["network_config"]
    torch.manual_seed(0)
    default = build_network(config)
    small_config, shape = small_setup(name)
    torch.manual_seed(0)
    small = build_network(small_config)
    return {"config": digest(config), "state": state_digest(default),
            "small_config": digest(small_config), "small_state": state_digest(small),
            **outputs_fingerprint(small, shape),
            "sweep": digest({"space": SPACES[name].to_dict(), "baselines": list(BASELINES[name])})}


def format_entry(name: str, values: dict) -> str:
    """One model's fingerprint as the lines of test_network_fingerprints.py's `BEFORE`."""
    first = ", ".join(f"{key}={values[key]!r}" for key in ("config", "state", "sweep"))
    second = ", ".join(f"{key}={values[key]!r}" for key in ("small_config", "small_state"))
    return (f"    {name!r}: dict(\n        {first},\n        {second},\n"
            f"        eval={values['eval']!r}, train={values['train']!r},\n        grad={values['grad']!r}),")


def main() -> None:
    from lightning_modules.registry import MODELS

    torch.set_num_threads(1)
    for name in MODELS:
        print(format_entry(name, fingerprint(name)))


if __name__ == "__main__":
    main()
