"""Worker processes for the data stages (generating a stand-in, decoding into the waveform store): one pool.

Ctrl-C in a terminal sends SIGINT to every process of the foreground process group, the workers
included. Left alone, every worker would raise KeyboardInterrupt and print a traceback, and the
parent, leaving a ``ProcessPoolExecutor`` block, would wait for the tasks already running (or
hang on a worker that died mid-task). `WorkerPool` keeps Ctrl-C the parent's business:

* its workers ignore SIGINT. They are started while the parent blocks SIGINT (a blocked signal
  stays blocked across ``spawn``'s fork and exec), and each sets SIGINT to be ignored before it
  unblocks it, so no moment exists in which a worker would take the signal;
* leaving the ``with`` block by any exception (KeyboardInterrupt, a `DataError`, a worker that
  died) cancels the tasks not started, kills the workers (SIGKILL: the work they had in flight is
  lost, which every stage's record of finished work allows for) and reaps them, without waiting
  for running tasks. The parent can then say what is kept and exit at once.

Workers are started with ``spawn`` (``fork`` is unsafe once torch's threads exist), so a calling
script needs an ``if __name__ == "__main__":`` guard; when ``__main__`` cannot be re-imported (a
script read from stdin) the pool runs its tasks in this process instead (`spawn_can_import_main`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

__all__ = ["BrokenProcessPool", "WorkerPool", "spawn_can_import_main"]


def spawn_can_import_main() -> bool:
    """False when ``spawn``ed workers could not re-import ``__main__`` (a script read from stdin)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.exists(main_file)


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is the parent's to handle (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT held back (not lost: it arrives when the block ends) while workers are started."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class WorkerPool:
    """Up to ``workers`` worker processes for one stage; ``workers <= 1`` runs every task in this process.

    Use it as a context manager and feed it with `imap`::

        with WorkerPool(workers) as pool:
            for result in pool.imap(task, ((arg, ...) for ...)):
                ...

    A worker that dies (killed, out of memory) makes `imap` raise `BrokenProcessPool`.
    """

    def __init__(self, workers: int):
        self.workers = max(1, int(workers)) if spawn_can_import_main() else 1
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> WorkerPool:
        if self.workers > 1:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_ignore_sigint)
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if exc_type is None:
            executor.shutdown(wait=True)
            return
        # Python 3.11's executor has no public way to stop running tasks: its worker processes are killed
        # directly (the executor keeps them in `_processes`, as it has since Python 3.2).
        processes = list((executor._processes or {}).values())
        for process in processes:
            process.kill()
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.join(timeout=1)

    def imap(self, task: Callable, arguments: Iterable[tuple], *, ordered: bool = True,
             window: int | None = None) -> Iterator:
        """``task(*args)`` for each tuple of ``arguments``: in their order, or as they finish (``ordered=False``).

        ``window`` bounds the tasks submitted but not yet returned (None: all at once), so the results
        waiting in memory stay bounded. In this process (one worker) the tasks run one after the other.

        ``arguments`` is pulled again after each result is consumed, so an iterator that its consumer
        extends (a result that calls for more tasks: the pieces of a long file) may answer "no more for
        now" (StopIteration) and give more later; the iteration ends when nothing is running and it has
        none left.
        """
        arguments = iter(arguments)
        if self._executor is None:
            for args in arguments:
                yield task(*args)
            return
        limit = window or sys.maxsize
        running: deque = deque()

        def fill() -> None:
            with _sigint_blocked():
                while len(running) < limit:
                    args = next(arguments, None)
                    if args is None:
                        return
                    running.append(self._executor.submit(task, *args))

        fill()
        while running:
            if ordered:
                future = running.popleft()
            else:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                future = next(f for f in running if f in done)  # the first submitted among those done
                running.remove(future)
            result = future.result()
            fill()
            yield result
            fill()  # the consumer may have added arguments while it handled the result
