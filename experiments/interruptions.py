"""Interrupted runs: a clean stop on SIGTERM or a killed loader worker, and what a resume cannot repeat.

A training run can end early in three ways that are nobody's bug:

* SIGKILL (the OOM killer, a preemption, `kill -9`): nothing runs any more; the run folder keeps its
  last end-of-epoch checkpoint and a rerun resumes from it.
* SIGTERM (`kill`, a cluster's preemption or time limit, `docker stop`). Lightning 2.6 catches it
  during `fit` and `test` only: its handler sets `trainer.received_sigterm`, the loops then raise
  `SIGTERMException`, a `SystemExit` without a code, so the process would exit with status 0,
  silently, as if it had succeeded, and outside `fit` (data preparation) the signal just kills the
  process. :func:`clean_stops` installs a handler of its own for the whole command (Lightning
  keeps calling it: it composes its handler with the one it finds) that stops the run at once
  with :class:`RunStopped`: one line naming the signal and how to resume, exit status 143.
* A DataLoader worker killed from outside (the OOM killer picks the process using the memory,
  often a worker): torch raises `RuntimeError("DataLoader worker (pid N) is killed by signal:
  Killed.")` in the training process, from wherever it happens to be. :func:`clean_stops` turns
  it into :class:`RunStopped` with one line naming the worker and the signal, exit status 1.

Checkpoints and result files are written atomically, so an interruption at any moment leaves the
run folder resumable: rerunning the same command, or `--resume RUN_DIR`, continues from its last
checkpoint.

Resuming is exact (the same metrics and history as an uninterrupted run) wherever the arithmetic
is deterministic: every random number of training follows from (seed, epoch, batch) (see
`callbacks.step_seeds`, `datamodules.sampling`). :func:`inexact_resume_reasons` names the settings
where it is not (GPU kernels that are not deterministic); `run_experiment` prints them when it
resumes such a run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from infrastructure.errors import RunStopped
from infrastructure.io import is_global_zero

EXIT_TERMINATED = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM
EXIT_WORKER_KILLED = 1

_WORKER_DIED = re.compile(r"DataLoader worker \(pid(?:\(s\))? (?P<pids>[\d, ]+)\) "
                          r"(?:is killed by signal: (?P<signal>[^.]+)\.|exited unexpectedly"
                          r"(?: with exit code (?P<code>-?\d+))?)")


def inexact_resume_reasons(accelerator: str, deterministic: bool, cudnn_benchmark: bool) -> list[str]:
    """Why a resumed run of these options may not end with the uninterrupted run's exact metrics.

    On the CPU every kernel the networks use is deterministic, so a resume is exact at any thread
    and worker count. On a GPU without `--deterministic` it is not, and neither are two fresh runs
    of the same command: cuDNN's autotuning (`--cudnn-benchmark`, on by default) times candidate
    convolution algorithms in each process and keeps the fastest, so the resumed process may use
    others, which round differently; and some CUDA kernels (cuDNN's backward convolutions among
    them) add with atomic operations in an order that varies from run to run. The differences
    start in the last bits and grow with training.
    """
    if deterministic or accelerator == "cpu":
        return []
    reasons = []
    if cudnn_benchmark:
        reasons.append("cuDNN autotuning (--cudnn-benchmark, the default) picks convolution algorithms by timing "
                       "them in each process, so the resumed process may pick others")
    reasons.append("CUDA kernels with atomic additions (cuDNN's backward convolutions among them) sum in a varying "
                   "order")
    return reasons


def say_if_resume_inexact(run, run_dir: Path) -> None:
    """Print, when resuming, that this run's continuation can differ from an uninterrupted one, and why."""
    reasons = inexact_resume_reasons(run.accelerator, run.options.deterministic, run.options.cudnn_benchmark)
    if reasons and is_global_zero():
        print(f"note: {run_dir} resumes on a GPU without --deterministic: the data order, random crops and dropout "
              f"masks are those of an uninterrupted run, but its metrics may differ slightly, because "
              f"{'; and '.join(reasons)} (--deterministic makes training, and so resuming, exact)",
              file=sys.stderr, flush=True)


def killed_worker(error: BaseException) -> tuple[str, str] | None:
    """(pids, what ended it) when `error` is torch's report of a DataLoader worker that died, else None."""
    match = _WORKER_DIED.search(str(error)) if isinstance(error, RuntimeError) else None
    if match is None:
        return None
    if match["signal"]:
        how = f"was killed by signal {_signal_name(match['signal'].strip())}"
    elif match["code"]:
        how = f"exited with status {match['code']}"
    else:
        how = "died"
    return match["pids"].strip(), how


def _signal_name(description: str) -> str:
    """'Killed' (strsignal's text, what torch reports) -> 'SIGKILL'."""
    for number in signal.valid_signals():
        with contextlib.suppress(ValueError):
            if signal.strsignal(number) == description:
                return signal.Signals(number).name
    return description


def _resume_hint(run_dir: Path) -> str:
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if checkpoint.is_file():
        where = f"{run_dir} keeps its last checkpoint ({checkpoint.relative_to(run_dir)}, written at every epoch end)"
    else:
        where = f"{run_dir} holds no checkpoint yet, so the rerun starts from the beginning"
    return f"{where}: rerun the same command, or python run.py --resume {run_dir}, to continue"


EXIT_INTERRUPTED = 128 + signal.SIGINT  # what a shell reports for a process ended by Ctrl-C


@contextlib.contextmanager
def ctrl_c_stops(run_dir: Path) -> Iterator[None]:
    """Within this block (training and testing), Ctrl-C ends the run at once with :class:`RunStopped`.

    Lightning turns a KeyboardInterrupt in `fit` into `sys.exit(1)` after ignoring every later Ctrl-C: the
    command would end with status 1 and no word of what is kept. Raised from this handler instead, the stop
    passes through Lightning's teardown (loader workers stopped) and reaches run.py as one line saying what
    the run folder keeps and how to continue, status 130. Loader workers, which get the terminal's Ctrl-C
    too, ignore it: the training process stops them.
    """
    run_dir = Path(run_dir)
    owner = os.getpid()

    def on_sigint(signum, frame):
        if os.getpid() != owner:
            return
        raise RunStopped(f"interrupted (Ctrl-C): {_resume_hint(run_dir)}", EXIT_INTERRUPTED)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main_thread else None
    try:
        yield
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def clean_stops(run_dir: Path) -> Iterator[None]:
    """Within this block, SIGTERM and a killed loader worker end the run with :class:`RunStopped`.

    The SIGTERM handler raises in the main thread of the process that installed it. Loader
    workers forked meanwhile inherit it: there it does nothing (a worker that raised would die
    and make its death, not the signal, the reported cause); the training process shuts its
    workers down as it stops. The previous handler comes back at the end of the block.
    """
    run_dir = Path(run_dir)
    owner = os.getpid()

    def on_sigterm(signum, frame):
        if os.getpid() != owner:
            return
        raise RunStopped(f"stopped: this process (pid {owner}) received SIGTERM; {_resume_hint(run_dir)}",
                         EXIT_TERMINATED)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main_thread else None
    try:
        yield
    except RuntimeError as error:
        worker = killed_worker(error)
        if worker is None:
            raise
        pids, how = worker
        raise RunStopped(f"stopped: a data-loader worker process (pid {pids}) {how} (the kernel's out-of-memory "
                         f"killer ends such processes when memory runs out: fewer --num-workers or a smaller "
                         f"--batch-size need less); {_resume_hint(run_dir)}", EXIT_WORKER_KILLED) from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
