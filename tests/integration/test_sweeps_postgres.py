"""Sweeps on a real PostgreSQL server, with workers as processes the way a cluster runs them.

The server is a throwaway cluster owned by this module (tests/support/pg_server.py): started once,
one fresh database per test (so each study starts with no Optuna tables at all), removed at
the end. Without PostgreSQL binaries or the driver the tests skip saying why; under CI=true
(`.ci/run`) they fail instead.

Trials are tiny (120 generated clips of 3.7 s, 16 Mel bands, one CPU thread per worker), as in
tests/integration/test_sweeps.py.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import run
from sweeps import leases
from sweeps import study as sweep_study
from sweeps.database import DatabaseUnreachable, check_driver, lost_connection
from sweeps.leases import LEASE
from sweeps.storage import SweepSettings, open_storage, parse_storage
from sweeps.study import create_or_load_study
from tests.support.helpers import KILL_EPOCHS, one_torch_thread, tiny_data_args
from tests.support.paths import REPO_ROOT
from tests.support.pg_server import server_or_skip

SWEEP_CLIPS = 120
# the rate tuned too (a continuous parameter: two trials never draw the same point, which the race test checks), with
# the paper's optimiser given, so that the stand-in's plan fixes neither
TINY_SPACE = {"n_fft": [512, 1024], "hop_length": [1024, 2048], "segments_per_clip": [1, 2],
              "lr": {"low": 0.001, "high": 0.1, "log": True}}
IDENTITY = {"model": "m", "space": {}, "fixed": {}}
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def pg():
    server = server_or_skip()
    yield server
    server.remove()


def test_without_a_server_the_tests_skip_saying_why_but_fail_under_ci(monkeypatch):
    from tests.support import pg_server

    monkeypatch.setattr(pg_server, "bin_dir", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server binaries"):
        server_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true needs the PostgreSQL tests to run"):
        server_or_skip()


# ---- no driver ------------------------------------------------------------------------------------------
def test_a_postgres_url_without_the_driver_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now raises ImportError
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    url = "postgresql://optuna:s3cret@127.0.0.1:9/optuna"
    assert run.main(["--sweep-report", "--study-name", "s", "--storage", url, "--runs-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert 'pip install -e ".[postgres]"' in err and "PostgreSQL driver" in err
    assert "s3cret" not in err  # the password is masked
    with pytest.raises(sweep_study.ConfigError, match=r"\.\[postgres\]"):
        check_driver("postgresql+psycopg2://u@host/db")
    with pytest.raises(sweep_study.ConfigError, match="not a database URL"):
        check_driver("nosuchdialect://u@host/db")


# ---- lost connections, in process -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_lost_connection_is_ridden_out_then_reported_in_one_line(pg, tmp_path, capfd):
    url = pg.create_database()
    target = parse_storage(url, tmp_path)
    storage = open_storage(target, SweepSettings(heartbeat_interval=1, grace_period=30))
    study, created = create_or_load_study(storage, target, "s", IDENTITY, [{"x": 1}])
    assert created and len(study.get_trials()) == 1
    capfd.readouterr()

    pg.stop()
    restart = threading.Timer(2.0, pg.start)
    restart.start()
    began = time.monotonic()
    try:
        waiting = study.get_trials(states=(TrialState.WAITING,))  # blocks until the server is back
    finally:
        restart.join()
    assert time.monotonic() - began >= 1.5 and len(waiting) == 1
    err = capfd.readouterr().err
    assert err.count("sweep: lost the connection to the study database") == 1, err
    assert err.count("sweep: reconnected to the study database") == 1 and "Traceback" not in err
    lost_line = next(line for line in err.splitlines() if "lost the connection" in line)
    assert "Connection refused" in lost_line or "terminating connection" in lost_line

    short = open_storage(target, SweepSettings(heartbeat_interval=1, grace_period=2))
    again = optuna.load_study(study_name="s", storage=short)
    pg.stop()
    try:
        began = time.monotonic()
        with pytest.raises(DatabaseUnreachable, match="unreachable for [23] s.*run it again once the database is back"):
            again.get_trials()
        assert time.monotonic() - began < 10
    finally:
        pg.start()
    assert len(again.get_trials()) == 1  # and back once the server is

    # a real error is not mistaken for a lost connection
    with pytest.raises(Exception) as raised:
        storage.get_study_id_from_name("no such study")
    assert lost_connection(raised.value) is None


@pytest.mark.slow
def test_racing_processes_create_a_postgres_study_and_its_first_trials_once(pg, tmp_path):
    """Four processes open one fresh database at the same instant: tables, study and the enqueued
    first trial are created once (the start-up holds a PostgreSQL advisory lock)."""
    url = pg.create_database()
    script = f"""
import sys, time
sys.path.insert(0, {str(REPO_ROOT)!r})
from pathlib import Path
from sweeps.storage import SweepSettings, open_storage, parse_storage
from sweeps.study import create_or_load_study
folder, me = Path({str(tmp_path)!r}), int(sys.argv[1])
(folder / f"ready-{{me}}").touch()
while len(list(folder.glob("ready-*"))) < 4:
    time.sleep(0.001)
target = parse_storage({url!r}, folder)
study, created = create_or_load_study(open_storage(target, SweepSettings()), target, "race",
                                      {IDENTITY!r}, [{{"x": 1}}])
print("created" if created else "loaded")
"""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(4)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in results]
    assert sorted(out.strip() for out, _ in results) == ["created", "loaded", "loaded", "loaded"]
    study = optuna.load_study(study_name="race", storage=open_storage(parse_storage(url, tmp_path), SweepSettings()))
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1


# ---- workers as processes, real training --------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_sweep_cache(cache_dir):
    options = run.parse_options(["--model", "lstm_mel", *tiny_data_args(cache_dir, clips=SWEEP_CLIPS)])
    sweep_study.dataset_clip_samples(options)  # the session's set, decoded before the workers start: they only open it
    return cache_dir


def _sweep_args(cache: Path, runs_root: Path, storage: str, *extra: str) -> list[str]:
    return ["--sweep", "lstm_mel", *tiny_data_args(cache, clips=SWEEP_CLIPS), "--n-mels", "16", "--logger", "csv",
            "--runs-root", str(runs_root), "--sweep-space", json.dumps(TINY_SPACE), "--optimizer", "sgd",
            "--storage", storage,
            "--pruner", "none", *extra]


class Worker:
    """`python run.py --sweep ...` in a subprocess, its output collected line by line as it comes."""

    def __init__(self, args: list[str]):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="disabled")
        self.proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "run.py"), *args], cwd=REPO_ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, timeout: float = 420) -> str:
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=30)
        return "\n".join(self.lines)


def _load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(parse_storage(url, Path(".")), SweepSettings()))


RACE_TRIALS = 8


@pytest.fixture(scope="module")
def raced(pg, pg_sweep_cache, tmp_path_factory):
    """Four workers start together on a fresh database; once every worker holds (or held) a trial's lease
    and one trial has finished, the server is stopped for 3 s and started again. RACE_TRIALS is twice
    the workers, and each trial trains two epochs (one took 1.5-2 s with four workers on 2 cores): a
    worker whose interpreter starts late still finds a trial to claim, and trials are running when the
    server stops. Not every worker need be at work during the outage: one whose last trial ends just
    before it may write its report and exit first (CI saw that once). Returned with the outage's bounds
    (local clock, as Optuna stamps trials), so the test can tell which trials spanned it."""
    runs_root = tmp_path_factory.mktemp("pg-race")
    url = pg.create_database()
    args = _sweep_args(pg_sweep_cache, runs_root, url, "--study-name", "race", "--trials", str(RACE_TRIALS),
                       "--max-epochs", "2", "--heartbeat-interval", "1", "--grace-period", "60")
    workers = [Worker(args) for _ in range(4)]
    deadline = time.time() + 420

    def ready() -> bool:  # a trial finished, and every worker holds (or held) a trial's lease
        if not any(" complete (best " in line for w in workers for line in list(w.lines)):
            return False
        leased = {t.user_attrs.get(LEASE, {}).get("pid") for t in _load(url, "race").get_trials()}
        return {w.proc.pid for w in workers} <= leased

    while not ready():
        assert time.time() < deadline and all(w.proc.poll() is None for w in workers), \
            "\n\n".join(w.wait(60)[-3000:] for w in workers)
        time.sleep(0.05)
    began = datetime.datetime.now()
    pg.restart(down_for=3.0)
    ended = datetime.datetime.now()
    outputs = [w.wait() for w in workers]
    return url, runs_root, workers, outputs, (began, ended)


@pytest.mark.slow
def test_four_workers_race_on_a_fresh_postgres_study(raced):
    url, runs_root, workers, outputs, _ = raced
    assert [w.proc.returncode for w in workers] == [0] * 4, "\n\n".join(o[-3000:] for o in outputs)
    assert not any("Traceback" in out for out in outputs)
    trials = _load(url, "race").get_trials()
    assert [t.number for t in trials] == list(range(len(trials)))
    counted = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(counted) == RACE_TRIALS  # exactly --trials, all workers together
    assert all(t.user_attrs.get("surplus") for t in trials if t.state != TrialState.COMPLETE)  # no real failures
    assert len({json.dumps(t.params, sort_keys=True) for t in counted}) == RACE_TRIALS  # no duplicate parameter sets
    assert len({t.user_attrs[LEASE]["pid"] for t in counted}) >= 2  # several workers trained


@pytest.mark.slow
def test_a_server_restart_between_trials_is_reported_in_one_line_and_records_nothing_twice(raced):
    url, runs_root, workers, outputs, (began, ended) = raced
    counted = [t for t in _load(url, "race").get_trials() if t.state == TrialState.COMPLETE]
    # a worker training a trial through the whole outage beat its heartbeat (every 1 s) into the 3 s without
    # a server, so it must have seen it; there is at least one such trial: the lease that made `raced` ready
    spanning = {t.user_attrs[LEASE]["pid"] for t in counted if t.datetime_start < began and t.datetime_complete > ended}
    assert spanning, [(t.number, t.datetime_start, t.datetime_complete) for t in counted]
    for worker, out in zip(workers, outputs):
        lost = [line for line in out.splitlines() if "sweep: lost the connection to the study database" in line]
        back = [line for line in out.splitlines() if "sweep: reconnected to the study database after" in line]
        # each lost connection is followed by a reconnection (a worker may meet the stopping server twice,
        # e.g. once while it shuts down and once while it is down)
        assert len(lost) == len(back) >= (worker.proc.pid in spanning), out[-3000:]
        assert all("retrying for up to 60 s" in line for line in lost) and "Traceback" not in out
    roots = [(t.system_attrs.get("retry_history") or [t.number])[0] for t in counted]
    assert len(set(roots)) == len(roots) == RACE_TRIALS  # no trial counted twice, retries included
    folders = [Path(t.user_attrs["run_dir"]) for t in counted]
    assert len(set(folders)) == RACE_TRIALS
    for trial, folder in zip(counted, folders):
        assert json.loads((folder / "sweep_trial.json").read_text())["value"] == pytest.approx(trial.value)
    records = list((runs_root / "sweeps" / "race" / "trials").glob("*/sweep_trial.json"))
    assert len(records) == RACE_TRIALS  # no trial trained to the end twice


@pytest.mark.slow
def test_sweep_report_reads_the_study_from_postgres(raced, capsys):
    url, runs_root, *_ = raced
    folder = runs_root / "sweeps" / "race"
    (folder / "trials.md").unlink()
    (folder / "best_params.json").unlink()
    assert not (folder / "study.db").exists()  # nothing local to read: the report comes from the server
    assert run.main(["--sweep-report", "--study-name", "race", "--storage", url, "--runs-root", str(runs_root)]) == 0
    assert "report: " in capsys.readouterr().out
    report = json.loads((folder / "best_params.json").read_text())
    study = _load(url, "race")
    assert report["counts"]["COMPLETE"] == RACE_TRIALS and report["best"]["number"] == study.best_trial.number
    assert (folder / "trials.md").is_file()


@pytest.mark.slow
def test_a_sigkilled_worker_is_failed_by_optunas_heartbeat_and_its_retry_resumes(pg, pg_sweep_cache, tmp_path, capfd):
    url = pg.create_database()
    args = _sweep_args(pg_sweep_cache, tmp_path, url, "--study-name", "kill", "--trials", "2",
                       "--max-epochs", str(KILL_EPOCHS), "--heartbeat-interval", "1", "--grace-period", "3")
    second = tmp_path / "sweeps" / "kill" / "trials" / "trial-0001"
    worker = Worker(args)
    deadline = time.time() + 360
    while not (second / "checkpoints" / "last.ckpt").is_file():  # trial 0 done, trial 1 one epoch in
        assert worker.proc.poll() is None and time.time() < deadline, worker.wait(60)[-3000:]
        time.sleep(0.05)
    time.sleep(0.3)  # let Lightning finish writing it: the kill lands in the next epoch
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.wait(60)
    assert not (second / "metrics.json").exists()
    study = _load(url, "kill")
    finished, killed = study.trials
    assert finished.state == TrialState.COMPLETE and killed.state == TrialState.RUNNING
    # The worker ran "on another node": with a foreign lease, only Optuna's heartbeat can tell it is dead.
    killed_id = leases.trial_id_of(study._storage, study, killed.number)
    study._storage.set_trial_user_attr(killed_id, LEASE, dict(killed.user_attrs[LEASE], host="node-b", boot_id="b"))
    time.sleep(3.5)  # past the grace period since its last heartbeat
    capfd.readouterr()

    with one_torch_thread():  # the same command on the surviving "node"
        assert run.main(args) == 0
    out, err = capfd.readouterr()
    assert "sweep: trial 1 was stale" in err
    assert f"resuming {second} from {Path('checkpoints') / 'last.ckpt'}" in err
    after = {t.number: t for t in _load(url, "kill").trials}
    assert after[0].state == TrialState.COMPLETE and after[0].value == finished.value  # no finished trial lost
    assert after[1].state == TrialState.FAIL and "fail_reason" not in after[1].user_attrs  # Optuna's heartbeat
    retry = after[2]
    assert retry.system_attrs["retry_history"] == [1] and retry.params == killed.params
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed"] is True
    assert Path(retry.user_attrs["run_dir"]) == second and (second / "metrics.json").is_file()
    assert len(after) == 3


SECRET = "Sekr1t-7fQ2"


@pytest.mark.slow
def test_a_storage_password_reaches_no_file_log_report_study_or_wandb(pg, pg_sweep_cache, tmp_path, capsys,
                                                                      monkeypatch):
    """A worker given `--storage postgresql://USER:PASSWORD@...` (a server that checks the password): the password
    is in none of --print-config's output, the worker's stdout/stderr, the files under RUNS_ROOT (trial config.json
    and config.yaml, W&B's offline run with its config and metadata, the sweep report), nor the study's attributes;
    the --print-config file read back connects with PGPASSWORD and is refused in one line without it."""
    import psycopg

    plain = pg.create_password_database("sweeper", SECRET)
    url = plain.replace("sweeper@", f"sweeper:{SECRET}@")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(plain.replace("sweeper@", "sweeper:wrong@")).close()  # the server does check it
    monkeypatch.delenv("PGPASSWORD", raising=False)
    runs_root = tmp_path / "runs"
    args = _sweep_args(pg_sweep_cache, runs_root, url, "--study-name", "secret", "--trials", "1", "--max-epochs", "1")
    args[args.index("--logger") + 1] = "wandb"

    assert run.main(["--print-config", *args]) == 0
    printed = capsys.readouterr().out
    assert SECRET not in printed and "storage: postgresql://sweeper:***@127.0.0.1" in printed
    (tmp_path / "sweep.yaml").write_text(printed)

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline")
    worker = subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), *args], cwd=REPO_ROOT, env=env, text=True,
                            capture_output=True, timeout=420)
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
    assert SECRET not in worker.stdout + worker.stderr and "sweeper:***@" in worker.stderr  # the plan names it
    files = [p for p in runs_root.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.json", "config.yaml", "trials.md", "trials.csv", "best_params.json"} <= names
    (wandb_run,) = [p for p in files if p.suffix == ".wandb"]  # W&B's offline run: config, metadata, console
    assert b"sweeper:***@" in wandb_run.read_bytes()  # it recorded the command line, masked
    assert [str(p) for p in files if SECRET.encode() in p.read_bytes()] == []
    study = _load(url, "secret")
    attrs = [study.user_attrs, study._storage.get_study_system_attrs(study._study_id)]
    attrs += [[t.user_attrs, t.system_attrs, t.params] for t in study.trials]
    assert len(study.trials) == 1 and SECRET not in json.dumps(attrs, default=str)

    assert run.main(["--config", str(tmp_path / "sweep.yaml"), "--sweep-report"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "set PGPASSWORD" in err and SECRET not in err
    monkeypatch.setenv("PGPASSWORD", SECRET)  # the file read back: the masked URL connects with PGPASSWORD
    assert run.main(["--config", str(tmp_path / "sweep.yaml"), "--sweep-report"]) == 0
    out = capsys.readouterr().out
    assert "study secret: 1 complete" in out and SECRET not in out
