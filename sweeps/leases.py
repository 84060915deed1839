"""Which process runs a trial, is it alive, and what happens to trials whose worker died.

Every running trial carries a lease (user attribute `sweep_worker`: host, boot id, pid and its
start time, last beat) refreshed by a heartbeat thread; before each trial a worker fails the
stale trials (worker gone on this host, heartbeat older than `--grace-period`, or no lease) and
queues them again, up to `--max-retry` times (see the `sweeps.study` docstring).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.trial import TrialState

from sweeps.storage import StorageTarget, SweepSettings, file_lock

LEASE = "sweep_worker"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str | None:
    """Start time of process `pid` (clock ticks since boot) or None when there is no such live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # a zombie has exited already
        return None
    return fields[19]


@dataclass(frozen=True)
class WorkerId:
    host: str
    boot_id: str
    pid: int
    started: str | None

    @classmethod
    def current(cls) -> WorkerId:
        pid = os.getpid()
        return cls(socket.gethostname(), _boot_id(), pid, _process_start(pid))

    def lease(self, trial_number: int) -> dict:
        return {"trial": trial_number, "host": self.host, "boot_id": self.boot_id, "pid": self.pid,
                "started": self.started, "beat": time.time()}


def lease_is_dead_here(lease: dict, here: WorkerId) -> bool:
    """True when the lease's process ran on this machine (same host and boot) and is gone."""
    if lease.get("host") != here.host or lease.get("boot_id") != here.boot_id or not here.boot_id:
        return False
    started = _process_start(int(lease.get("pid", -1)))
    return started is None or (lease.get("started") is not None and started != lease.get("started"))


class TrialHeartbeat:
    """A thread that keeps a running trial's lease (and Optuna's RDB heartbeat) fresh."""

    def __init__(self, storage, trial_id: int, trial_number: int, interval: float, worker: WorkerId):
        self.storage, self.trial_id, self.number = storage, trial_id, trial_number
        self.interval, self.worker = interval, worker
        self.lost = False  # the trial was finished by someone else (declared stale)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sweep-heartbeat-{trial_number}", daemon=True)

    def beat(self) -> None:
        try:
            if hasattr(self.storage, "record_heartbeat") and self.storage.get_heartbeat_interval():
                self.storage.record_heartbeat(self.trial_id)
            self.storage.set_trial_user_attr(self.trial_id, LEASE, self.worker.lease(self.number))
        except UpdateFinishedTrialError:
            self.lost = True
            self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as error:  # a database hiccup: keep beating, the grace period absorbs it
                print(f"sweep: heartbeat of trial {self.number} failed ({error}); retrying", file=sys.stderr)

    def __enter__(self) -> TrialHeartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ---- stale trials -------------------------------------------------------------------------------------
def _study_id(storage, study: optuna.Study) -> int:
    return storage.get_study_id_from_name(study.study_name)


def trial_id_of(storage, study: optuna.Study, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(_study_id(storage, study), number)


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retry: int | None) -> bool:
    """Queue a finished (failed) trial again: same parameters, reported values inherited, retry history kept."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    before = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry, inherit_intermediate_values=True)(study, trial)
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) > before


def fail_and_retry(storage, study: optuna.Study, number: int, reason: str, max_retry: int | None) -> bool:
    """Fail a RUNNING trial and queue it again; False when another worker finished it first."""
    trial_id = trial_id_of(storage, study, number)
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    retry_trial(study, storage.get_trial(trial_id), max_retry)
    return True


def recover_stale_trials(storage, target: StorageTarget, study: optuna.Study, settings: SweepSettings,
                         here: WorkerId | None = None, now: float | None = None) -> list[int]:
    """Fail the study's stale RUNNING trials and queue them again; returns their numbers.

    Stale: the lease's process is gone (same machine), the lease's beat is older than the grace
    period (journal storage; RDB storages use Optuna's heartbeat for that), or the trial has run
    longer than the grace period without ever getting a lease.
    """
    here = here or WorkerId.current()
    now = time.time() if now is None else now
    recovered = []
    with file_lock(target.lock):  # file storages: one recovery at a time (servers lock the trial's row themselves)
        if target.kind == "rdb" and storage.get_heartbeat_interval():
            running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            still = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            recovered += sorted(running - still)
        for trial in study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
            lease = trial.user_attrs.get(LEASE)
            reason = None
            if isinstance(lease, dict) and lease.get("trial") == trial.number:
                if lease_is_dead_here(lease, here):
                    reason = f"worker process {lease.get('pid')} on {lease.get('host')} is gone"
                elif target.kind == "journal" and now - float(lease.get("beat", 0)) > settings.grace_period:
                    reason = (f"no heartbeat from {lease.get('host')}:{lease.get('pid')} for "
                              f"{now - float(lease.get('beat', 0)):.0f} s")
            elif trial.datetime_start is not None:
                age = (datetime.now() - trial.datetime_start).total_seconds()
                if age > settings.grace_period:
                    reason = f"running for {age:.0f} s without a worker lease"
            if reason and fail_and_retry(storage, study, trial.number, reason, settings.max_retry):
                recovered.append(trial.number)
    return recovered


