"""Run by tests/integration/test_distributed.py under `torchrun --nproc-per-node 2`: every rank trains the given
models in turn, each a 2-process DDP run of run.py (the literature models in their CPU-sized variants,
tests/support/helpers.py), so one launch of two processes covers them all.

    python -m torch.distributed.run --nproc-per-node 2 tests/support/ddp_models.py CACHE OUT PORTS MODEL [MODEL ...]

Each run ends by leaving its process group; the next one forms a new group through a store of its
own (PORTS: one free port per model, comma-separated, the same for both ranks), because re-forming
the default group on torchrun's agent store reads the previous group's keys and fails to connect
("Gloo connectFullMesh failed ... Connection refused").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import run  # noqa: E402
from lightning_modules import registry  # noqa: E402
from tests.support.helpers import (  # noqa: E402
    CHUNK_CLIP_SAMPLES,
    DDP_MODEL_ARGS,
    TINY_CLIP_SAMPLES,
    small_model_args,
    tiny_data_args,
)


def main(argv: list[str]) -> int:
    cache, out, ports, models = Path(argv[0]), Path(argv[1]), argv[2].split(","), argv[3:]
    os.environ.pop("TORCHELASTIC_USE_AGENT_STORE", None)
    for name, port in zip(models, ports, strict=True):
        os.environ["MASTER_PORT"] = port
        registry.MODELS[name] = registry.MODELS[name].small_variant()
        # the tiny 3.7 s clips, or test_compare's 5.25 s ones where the chunk is longer (5 s: harmonic_cnn and
        # tagging_transformer's CPU variant)
        chunk = registry.MODELS[name].frame_samples or 0
        assert chunk <= CHUNK_CLIP_SAMPLES, (name, chunk)
        clip_samples = TINY_CLIP_SAMPLES if chunk <= TINY_CLIP_SAMPLES else CHUNK_CLIP_SAMPLES
        code = run.main(["--model", name, *tiny_data_args(cache, 120, clip_samples), *small_model_args(name),
                         *DDP_MODEL_ARGS, "--run-dir", str(out / name)])
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
