"""Ctrl-C as a terminal sends it: SIGINT to a command's whole process group, once it has visibly begun a stage."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import REPO_ROOT


@dataclass(frozen=True)
class Stopped:
    """How an interrupted command ended.

    Attributes:
        returncode: its exit status.
        seconds: from the signal to its exit.
        stderr: all it wrote on stderr.
        survivors: ``/proc/PID/stat`` lines of the processes of its group still running after it exited.
    """

    returncode: int
    seconds: float
    stderr: str
    survivors: list[str]


def _running_in_group(group: int) -> list[str]:
    """The processes of process group ``group`` that are not zombies (a zombie has ended; its parent reaps it)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _parent, process_group = text.rsplit(")", 1)[1].split()[:3]
        if int(process_group) == group and state != "Z":
            found.append(text.strip())
    return found


def _as_a_foreground_job() -> None:
    """In the child before exec: SIGINT handled by default and unblocked, as a shell starts a foreground job.

    A command started in the background of a non-interactive shell (``pytest ... &``), or by a process that
    blocks SIGINT, inherits an ignored or blocked SIGINT; the command under test would then never see Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def interrupt(argv: list[str], began: Callable[[], bool], *, env: dict | None = None, timeout: float = 300) -> Stopped:
    """Start ``argv`` (from the repository root) in a new session, wait until ``began()``, send SIGINT to its
    process group as a terminal's Ctrl-C does, and return how it ended.

    Raises:
        AssertionError: the command ended before ``began()``, or did not begin within ``timeout`` s, or did
            not end within 60 s of the signal (then its whole group is killed).
    """
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True, preexec_fn=_as_a_foreground_job)
        try:
            deadline = time.monotonic() + timeout
            while not began():
                if proc.poll() is not None:
                    err.seek(0)
                    raise AssertionError(f"the command ended (status {proc.returncode}) before the stage began: "
                                         f"{err.read()[-2000:]}")
                assert time.monotonic() < deadline, f"the stage did not begin within {timeout} s"
                time.sleep(0.01)
            sent = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise AssertionError("the command did not end within 60 s of Ctrl-C") from None
            seconds = time.monotonic() - sent
            survivors = _running_in_group(proc.pid)
            for _ in range(20):  # multiprocessing's resource tracker ends when it reads its pipe's end
                if not survivors:
                    break
                time.sleep(0.05)
                survivors = _running_in_group(proc.pid)
        finally:
            if proc.poll() is None or _running_in_group(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        err.seek(0)
        return Stopped(proc.returncode, seconds, err.read(), survivors)
