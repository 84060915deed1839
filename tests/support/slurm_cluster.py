"""A throwaway SLURM cluster for the tests: two nodes on this host, the daemons started as root, removed at the end.

The scripts in slurm/ are submitted with `sbatch` to a real controller (Debian's `slurmctld`,
`slurmd`, `slurm-client` and `munge` packages; `.ci/run` installs them when they are missing),
so that what the faked SLURM of tests/support/fake_slurm.py cannot show is shown: SLURM accepts the
scripts' directives, `srun` starts their tasks with the environment Lightning reads, a requeued
job runs its script again, the time-limit signal reaches the batch shell.

Everything lives in one temporary folder: the munge key and socket, slurm.conf, the
controller's state, the nodes' spools, the logs and the daemons' pid files. The daemons run in
the foreground as children of the test process (they die with it, through PR_SET_PDEATHSIG,
if it is killed), listen on free ports, and the client commands find the cluster through
$SLURM_CONF, so nothing under /etc is read or written and two test sessions do not meet.

Settings that differ from SLURM's defaults, and why:
- `AuthInfo=cred_expire=5`: a requeued job may start again only once its launch credential
  has expired (two minutes by default; this is the least SLURM accepts): the tests requeue jobs
  and wait for them.
- `SchedulerParameters=sched_interval=1`: a requeued job becomes eligible at a moment no event
  marks; the main scheduler looks at pending jobs every second instead of every minute.
- `JobRequeue=0`: only a job that asks (`--requeue`, as the training and reproduction scripts
  do) can be requeued, so the tests show that the scripts ask.
- `SlurmctldDebug=debug2`: the log then has the controller's periodic time-limit check (its
  period is fixed when SLURM is built; it sends `--signal`'s warning) and the signal itself, so a
  test can tell when the next check comes and that SLURM sent the signal.
- `proctrack/linuxproc`, `task/none`, no accounting: nothing needs cgroups or a database.
- `SlurmdParameters=config_overrides`: a node is what slurm.conf says (enough CPUs for the tests'
  two-task jobs), whatever the host's topology; the two nodes share the host's cores.
- Two node daemons on one host (`slurmd -N NAME`, each with its own port and spool): possible
  because Debian builds SLURM with multiple-slurmd support (`scontrol show config` says
  MULTIPLE_SLURMD = Yes), so jobs of two nodes run here too.

`unavailable()` says why no cluster can be had here (None when one can); the tests skip with
that reason, or fail under `CI=true`, where a green run must mean they ran.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.pg_server import free_port

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "scancel", "sinfo")
PACKAGES = "slurmctld slurmd slurm-client munge"
NODES = ("localhost", "node2")
"""The node daemons, both on this host (Debian builds SLURM with multiple-slurmd support). The first is where
one-node jobs run (it weighs less): Lightning takes the first node's name as the DDP address, and only
`localhost` resolves here; the second serves the jobs of two nodes, whose first node is `localhost`."""
CHECK_PERIOD = 30.0
"""Seconds between the controller's time-limit checks (PERIODIC_TIMEOUT, fixed when SLURM is built)."""
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
_FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
             "PREEMPTED")


def program(name: str) -> str | None:
    """The path of a SLURM or munge program (the daemons live in /usr/sbin, not always on a user's PATH)."""
    return shutil.which(name, path=_SEARCH_PATH)


def unavailable() -> str | None:
    """Why no throwaway cluster can be started here, or None."""
    if not hasattr(os, "geteuid") or not Path("/proc").is_dir():
        return "the throwaway SLURM cluster runs on Linux"
    missing = [name for name in PROGRAMS if program(name) is None]
    if missing:
        return (f"no SLURM here ({', '.join(missing)} missing): install Debian's packages {PACKAGES} "
                "(.ci/run installs them when it runs as root)")
    if os.geteuid() != 0:
        return "the SLURM daemons need root (slurmd starts each job as the user who submitted it)"
    return None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SlurmCluster:
    """The nodes and their controller: `start()`, `env()`, `sbatch()`, `job()`, `wait()`, `remove()`."""

    def __init__(self) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        self.root = Path(tempfile.mkdtemp(prefix="mtat-slurm-"))
        self.root.chmod(0o755)  # munged refuses a socket folder others may write; jobs read files here
        self.conf = self.root / "slurm.conf"
        self.logs = self.root / "log"
        self.cpus = max(2, os.cpu_count() or 1)
        self._daemons: list[subprocess.Popen] = []
        atexit.register(self.remove)  # a test run that dies still takes its cluster down

    # ---- set-up ---------------------------------------------------------------------------------------------
    def _write_config(self) -> None:
        for folder in ("munge", "state", "spool", "log"):
            (self.root / folder).mkdir(mode=0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(128))  # mungekey's default size: 1024 bits
        key.chmod(0o400)
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        # Lightning's default DDP port is 15000 + the job id's last four digits: a random first id keeps two
        # test sessions on one host (each with its own cluster) off the same ports.
        first_job = random.SystemRandom().randint(1000, 9999) * 10  # the tests seed random: not this
        self.conf.write_text("\n".join([
            "ClusterName=mtattest", f"SlurmctldHost={NODES[0]}(127.0.0.1)", f"SlurmctldPort={free_port()}",
            "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={self.root / 'munge' / 'munge.socket'},cred_expire=5",
            f"StateSaveLocation={self.root / 'state'}", f"SlurmdSpoolDir={self.root / 'spool' / '%n'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}", f"SlurmdPidFile={self.root / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={self.logs / 'slurmctld.log'}", f"SlurmdLogFile={self.logs / 'slurmd-%n.log'}",
            "SlurmctldDebug=debug2", "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/builtin", "SchedulerParameters=sched_interval=1",
            "SlurmdParameters=config_overrides", "ReturnToService=2", "JobRequeue=0", "KillWait=5",
            "MinJobAge=3600", f"FirstJobId={first_job}",
            # `localhost` last: while the controller has read a single node named localhost, it takes every
            # other node name for that one ("Duplicated NodeHostName node2").
            *reversed([f"NodeName={name} NodeAddr=127.0.0.1 Port={free_port()} Weight={weight} CPUs={self.cpus} "
                       f"RealMemory={memory_mb * 9 // 10} State=UNKNOWN" for weight, name in enumerate(NODES, 1)]),
            f"PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP", ""]))

    def _daemon(self, name: str, *args: str) -> None:
        with open(self.logs / f"{name}.out", "w") as log:  # the child keeps its own descriptor
            self._daemons.append(subprocess.Popen([program(name), *args], stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent))

    def start(self, timeout: float = 60) -> SlurmCluster:
        self._write_config()
        munge = self.root / "munge"
        self._daemon("munged", "--foreground", "--force", f"--key-file={munge / 'munge.key'}",
                     f"--socket={munge / 'munge.socket'}", f"--pid-file={munge / 'munged.pid'}",
                     f"--seed-file={munge / 'munged.seed'}", f"--log-file={self.logs / 'munged.log'}")
        self._wait_for(lambda: (munge / "munge.socket").exists(), timeout, "munged did not create its socket")
        self._daemon("slurmctld", "-D", "-f", str(self.conf))
        for name in NODES:
            self._daemon("slurmd", "-D", "-N", name, "-f", str(self.conf))
        self.wait_idle(timeout)
        return self

    def _wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.args[0] for p in self._daemons if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{what}{' (' + ', '.join(dead) + ' exited)' if dead else ''}\n{self.log_tail()}")
            time.sleep(0.1)

    # ---- use ------------------------------------------------------------------------------------------------
    def env(self, base: dict | None = None) -> dict:
        """`base` (default: this process's environment) without SLURM's job variables, plus $SLURM_CONF."""
        base = dict(os.environ if base is None else base)
        clean = {k: v for k, v in base.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        path = os.pathsep.join([clean.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        return dict(clean, SLURM_CONF=str(self.conf), PATH=path)

    def command(self, name: str, *args: str, env: dict | None = None, cwd: Path | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([program(name), *args], env=self.env(env), cwd=cwd, capture_output=True, text=True,
                                timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"{name} {' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}")
        return result

    def node_states(self) -> list[str]:
        result = self.command("sinfo", "-h", "-N", "-o", "%N %t", check=False)
        states = dict(line.split() for line in result.stdout.splitlines()) if result.returncode == 0 else {}
        return [states.get(name, "") for name in NODES]

    def wait_idle(self, timeout: float = 120) -> None:
        """Until every node is idle (a job that has ended may hold its node while its processes are cleaned up)."""
        self._wait_for(lambda: self.node_states() == ["idle"] * len(NODES), timeout, "the nodes did not become idle")

    def sbatch(self, *args: str, env: dict | None = None, cwd: Path | None = None) -> str:
        """Submit; returns the job id (an array's base id)."""
        return self.command("sbatch", "--parsable", *args, env=env, cwd=cwd).stdout.strip().split(";")[0]

    def jobs(self, job: str) -> list[dict]:
        """`scontrol show job` of a job (every task of an array), as dicts of its KEY=VALUE fields."""
        result = self.command("scontrol", "-o", "show", "job", job, check=False)
        if result.returncode != 0:
            return []
        records = []
        for line in result.stdout.splitlines():
            records.append(dict(re.findall(r"(\w+(?:/\w+)?)=(\S*)", line)))
        return records

    def job(self, job: str) -> dict:
        (record,) = self.jobs(job)
        return record

    def wait(self, job: str, timeout: float = 300) -> list[dict]:
        """Wait until every task of the job has ended; returns their records."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.jobs(job)
            if records and all(r.get("JobState") in _FINISHED for r in records):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job} still {[r.get('JobState') for r in records]} after {timeout} s\n"
                                     f"{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for name in ("slurmctld.log", *(f"slurmd-{n}.log" for n in NODES), "munged.log"):
            path = self.logs / name
            if path.is_file():
                text = path.read_text(errors="replace")
                parts.append(f"--- {name}\n" + "\n".join(line for line in text.splitlines()
                                                          if "debug2:" not in line)[-chars:])
        return "\n".join(parts)

    def controller_log(self) -> str:
        return (self.logs / "slurmctld.log").read_text(errors="replace")

    def next_time_limit_check(self) -> float:
        """When (time.time()) the controller will next check time limits and send `--signal` warnings.

        It checks every CHECK_PERIOD seconds from its start, a little later each time (its loop tests
        the period when it wakes): the log's last check, or the controller's start before the first,
        gives the phase.
        """
        log = self.controller_log()
        stamps = re.findall(r"^\[([\d\-T:.]+)\] debug2: Testing job time limits", log, re.M) or \
            re.findall(r"^\[([\d\-T:.]+)\] Running as primary controller", log, re.M)
        if not stamps:
            raise RuntimeError("no time-limit check in slurmctld's log (SlurmctldDebug must be debug2)")
        last = datetime.datetime.fromisoformat(stamps[-1]).timestamp()  # the log is in local time, as is this
        return last + CHECK_PERIOD * (int((time.time() - last) // CHECK_PERIOD) + 1)

    # ---- tear-down ------------------------------------------------------------------------------------------
    def _job_processes(self) -> list[int]:
        """Processes of this cluster's jobs (their environment names this cluster's slurm.conf)."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if marker in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
        return found

    def remove(self) -> None:
        """Cancel every job, stop the daemons, end what the jobs left running, delete the folder."""
        if not self.root.exists():
            return
        try:
            if any(p.poll() is None for p in self._daemons):
                self.command("scancel", "--partition=debug", check=False)
                with contextlib.suppress(RuntimeError):
                    self._wait_for(lambda: not self.command("squeue", "-h", check=False).stdout.strip(), 20, "")
            for process in reversed(self._daemons):  # slurmd, slurmctld, munged
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            for pid in self._job_processes():  # slurmstepd and job steps outlive slurmd
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def cluster_or_skip() -> SlurmCluster:
    """A started throwaway cluster; skip (fail under CI=true) saying why when none can be had."""
    import pytest

    reason = unavailable()
    cluster = None
    if reason is None:
        try:
            cluster = SlurmCluster()
            cluster.start()
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            if cluster is not None:
                cluster.remove()
            reason = f"the throwaway SLURM cluster did not start: {error}"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true needs the SLURM tests to run: {reason}")
        pytest.skip(reason)
    return cluster
