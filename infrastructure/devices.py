"""How many GPUs this process can use, answered without importing torch.

The command line decides a few defaults by the hardware (the modern recipe trains in bf16 on a GPU,
in fp32 on the CPU; a sweep's plan names its devices) before anything heavy is imported, so that
`--help`, `--print-config` and errors come at once. NVIDIA's management library answers without
creating a CUDA context (a context created before a fork would break the forked children), and
`CUDA_VISIBLE_DEVICES` narrows its count the way the CUDA runtime does.
"""

from __future__ import annotations

import ctypes
import functools
import os


def _visible_limit() -> int | None:
    """How many devices CUDA_VISIBLE_DEVICES lets through (None: no limit set)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    count = 0
    for item in value.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break  # the runtime stops at the first invalid entry
        count += 1
    return count


@functools.cache
def _driver_count() -> int:
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return 0
    count = ctypes.c_uint(0)
    try:
        if nvml.nvmlInit_v2() != 0:
            return 0
        try:
            if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
                return 0
        finally:
            nvml.nvmlShutdown()
    except AttributeError:
        return 0
    return int(count.value)


def gpu_count() -> int:
    """GPUs this process would see (0 without an NVIDIA driver)."""
    limit = _visible_limit()
    count = _driver_count()
    return count if limit is None else min(count, limit)
