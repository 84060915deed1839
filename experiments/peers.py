"""Multi-node DDP without a scheduler: how long a rank waits for the others, and what it says when one is gone.

A training process that loses a peer (its node crashed, was SIGKILLed, or hangs) must not wait
forever in a collective, and must say what happened in one line instead of a 60-line traceback
through Lightning's loops.

- A peer that dies on a reachable machine closes its sockets: gloo (and NCCL) fail the next
  collective of every other rank at once ("Connection closed by peer"), within seconds of a
  SIGKILL (tests/integration/test_multinode.py).
- A peer that stops answering without closing anything (a frozen or powered-off node, a
  network partition) is only noticed when a collective times out: `--ddp-timeout SECONDS`,
  passed to `DDPStrategy(timeout=...)` and so to `init_process_group`. The default, 1800 s, is
  PyTorch's and Lightning's own: the timeout also bounds how long ranks legitimately wait for
  each other (for rank 0 writing checkpoints, the figures and the W&B upload at the end of a
  run, for the slowest node to join at start-up), so shortening it below the longest such wait
  turns a healthy run into a failed one.

Either way the surviving ranks raise `PeerLost` (a DataError: run.py prints one line and exits
with 2); rerunning the same command on every node resumes from the run's last checkpoint.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from infrastructure.errors import ConfigError, DataError

DEFAULT_DDP_TIMEOUT = 1800


class PeerLost(DataError):
    """Another DDP process died or stopped answering."""


def ddp_timeout(options) -> timedelta:
    """`--ddp-timeout` as the timedelta DDPStrategy takes (missing in configurations saved before the flag)."""
    seconds = options.ddp_timeout
    seconds = DEFAULT_DDP_TIMEOUT if seconds is None else seconds
    if seconds <= 0:
        raise ConfigError(f"--ddp-timeout must be a positive number of seconds, got {seconds}")
    return timedelta(seconds=seconds)


# What gloo and NCCL say when a peer is gone (a RuntimeError, not always one of torch's DistError classes).
_PEER_SIGNS = ("connection closed by peer", "connection reset by peer", "timed out waiting", "broken pipe",
               "connection refused", "watchdog caught collective operation timeout", "nccl communicator was aborted",
               "timeout caused pair closure")  # gloo, when a frozen peer's pair times out inside a collective


def is_peer_error(error: BaseException) -> bool:
    """Whether `error` is how gloo or NCCL report a lost or silent peer (checked only in multi-process runs)."""
    import torch.distributed as dist

    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    return isinstance(error, RuntimeError) and any(sign in str(error).lower() for sign in _PEER_SIGNS)


def _describe(error: BaseException) -> str:
    """The gloo/NCCL message's first sentence, without the C++ source location it starts with."""
    text = " ".join(str(error).split())
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h)(:\d+)?\]\s*", "", text)
    first = re.split(r"(?<=[.!])\s", text, maxsplit=1)[0]
    return first.rstrip(".")[:300]


def peer_lost(error: BaseException, options, run_dir: Path | str | None = None) -> PeerLost | None:
    """A PeerLost for `error` when it is a distributed failure of a multi-process run, else None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    if not is_peer_error(error):
        return None
    seconds = ddp_timeout(options).total_seconds()
    resume = f" ({Path(run_dir) / 'checkpoints' / 'last.ckpt'})" if run_dir else ""
    return PeerLost(f"rank {dist.get_rank()} lost contact with another training process ({_describe(error)}): "
                    f"a node died, was killed, or did not answer for --ddp-timeout {seconds:g} s; start the same "
                    f"command again on every node to resume from the last checkpoint{resume}")
