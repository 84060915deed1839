"""The scripts in slurm/ submitted with `sbatch` to a real SLURM that the tests start: two nodes on this host.

tests/support/slurm_cluster.py starts the controller, two node daemons and munge in a temporary folder
(skipped saying why where SLURM or root is missing; failed under CI=true). The scripts run
unedited, as a user submits them: sbatch's own options replace their GPU, memory, time and signal
directives, and environment variables their defaults (ACCELERATOR=cpu, VENV, DATA, RUNS_ROOT,
CACHE_DIR), as docs/cluster.md shows (a test checks that it shows these commands). What only a
faked SLURM can show here (the GPU directives' command lines) stays in tests/integration/test_slurm_scripts.py
and tests/integration/test_reproduce_slurm.py.

The training jobs run mel_cnn with two tasks on one node, or one task on each of the two nodes
(DDP over gloo, one CPU per task), on the session's tiny generated clips. The first job is the
uninterrupted run that the two-node and the requeued jobs must reproduce exactly, metrics and
history alike (the same two ranks on the same shards; a resume is exact on the CPU). The sweep
workers and the reproduction tasks are one-CPU array tasks.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import run
from tests.support.helpers import CHUNK_CLIP_SAMPLES, KILL_EPOCHS, TEST_MEL_BACKEND, TINY_MEL_ARGS, read_metrics
from tests.support.paths import REPO_ROOT
from tests.support.pg_server import server_or_skip
from tests.support.slurm_cluster import CHECK_PERIOD, cluster_or_skip

TRAIN_SCRIPT = "slurm/train_multinode.sbatch"
SWEEP_SCRIPT = "slurm/sweep_worker.sbatch"
REPRODUCE_SCRIPT = "slurm/reproduce.sbatch"
# sbatch options that fit the scripts to one node of CPUs (they replace the scripts' #SBATCH lines)
CPU_NODE = ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--mem=2G", "--gres=none"]
TWO_NODES = ["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--mem=2G", "--gres=none"]
CPU_TASK = ["--cpus-per-task=1", "--mem=2G", "--gres=none"]
SIGNAL_LEAD = 25
"""The warning's lead before a one-minute limit: shorter than the controller's check period, so that no warning can
come while the job's batch shell is still starting, before its trap is set (bash dies of an untrapped SIGUSR1)."""
ALIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD")
"""Job states on the way to an end (a requeued job passes through COMPLETING and REQUEUED back to PENDING)."""
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE", "GROUP_RANK",
                    "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID")


@pytest.fixture(scope="module")
def slurm():
    cluster = cluster_or_skip()
    yield cluster
    cluster.remove()


def test_without_slurm_the_tests_skip_saying_why_but_fail_under_ci(monkeypatch):
    from tests.support import slurm_cluster

    monkeypatch.setattr(slurm_cluster, "program", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no SLURM here .*slurmctld, slurmd"):
        cluster_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true needs the SLURM tests to run"):
        cluster_or_skip()


# ---- submitting the scripts ---------------------------------------------------------------------------------------
def _without(args: list[str], *options: str) -> list[str]:
    """`args` less the given options and their values (the scripts pass --data and --cache-dir themselves)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        else:
            out.append(arg)
    return out


def _job_env(cache: Path, runs_root: Path, **variables: str) -> dict:
    """What the tests export before `sbatch` (sbatch hands the environment to the job)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    return dict(env, VENV=sys.prefix, DATA="synthetic", RUNS_ROOT=str(runs_root), CACHE_DIR=str(cache),
                WANDB_MODE="disabled", **variables)


def _submit(slurm, script: str, flags: list[str], env: dict, args: list[str]) -> str:
    """`sbatch FLAGS SCRIPT ARGS` from the repository root, as docs/cluster.md does."""
    return slurm.sbatch(*flags, script, *args, env=env, cwd=REPO_ROOT)


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def _assert_ended(slurm, job: str, log: Path, state: str = "COMPLETED", timeout: float = 300) -> dict:
    (record,) = slurm.wait(job, timeout)
    assert (record["JobState"], record["ExitCode"]) == (state, "0:0"), f"{record}\n{_log(log)[-6000:]}"
    return record


def _run_folder(runs_root: Path) -> Path:
    (folder,) = [p.parent for p in runs_root.glob("*/config.json")]
    return folder


def _wait_for(path: Path, slurm, job: str, log: Path, timeout: float = 240) -> float:
    """Wait until `path` exists while the job runs; returns when (time.time())."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        states = [r.get("JobState") for r in slurm.jobs(job)]
        assert time.monotonic() < deadline and states and all(s in ALIVE for s in states), \
            f"job {job} {states}, no {path}\n{_log(log)[-4000:]}"
        time.sleep(0.05)
    return time.time()


@pytest.fixture(scope="module")
def prepared(tiny_cache, mel_cnn_run):
    """The session's tiny set, decoded before any job starts (the session's mel_cnn run prepares it), so that the
    jobs' tasks only open it and the first job's timing is training alone."""
    return tiny_cache


def _data_args(tiny) -> list[str]:
    """The tiny set's run.py options less --data and --cache-dir, which the scripts pass from DATA and CACHE_DIR."""
    return _without(tiny.args(), "--data", "--cache-dir")


def _train_tail(epochs: int = 3) -> list[str]:
    """run.py options of the training jobs after the data's: epochs enough for a requeue to land between the
    first checkpoint and the end; evaluation batches that split the test clips unevenly over the two ranks,
    so that a sampler padding with duplicates would show in the comparison with one process."""
    return [*TINY_MEL_ARGS["mel_cnn"], "--max-epochs", str(epochs), "--eval-batch-size", "4", "--logger", "csv",
            "--ddp-timeout", "120"]


def _train_args(tiny, epochs: int = 3) -> list[str]:
    return [*_data_args(tiny), *_train_tail(epochs)]


def _train_env(tiny, runs_root: Path) -> dict:
    return _job_env(tiny.cache_dir, runs_root, MODEL="mel_cnn", ACCELERATOR="cpu")


@pytest.fixture(scope="module")
def trained(slurm, prepared, tmp_path_factory):
    """One uninterrupted training job, and when (seconds after its submission) each epoch's checkpoint came:
    the time-limit test times its own job by it."""
    work = tmp_path_factory.mktemp("slurm-train")
    runs_root, log = work / "runs", work / "train.out"
    submitted = time.time()
    job = _submit(slurm, TRAIN_SCRIPT, [*CPU_NODE, f"--output={log}"], _train_env(prepared, runs_root),
                  _train_args(prepared))
    checkpoints, seen = [], None
    while slurm.job(job)["JobState"] in ALIVE:
        found = list(runs_root.glob("*/checkpoints/last.ckpt"))
        with contextlib.suppress(OSError):
            stamp = found[0].stat().st_mtime_ns if found else None
            if stamp != seen:
                seen = stamp
                checkpoints.append(time.time() - submitted)
        time.sleep(0.05)
    _assert_ended(slurm, job, log)
    return SimpleNamespace(job=job, run_dir=_run_folder(runs_root), log=_log(log), checkpoints=checkpoints)


def _assert_same_training(expected: Path, got: Path) -> None:
    """The uninterrupted run's result: test metrics, thresholds and every epoch's history, exactly."""
    a, b = read_metrics(expected), read_metrics(got)
    assert b["test"] == a["test"] and b["thresholds"] == a["thresholds"] and b["epochs"] == a["epochs"]
    assert (got / "history.csv").read_text() == (expected / "history.csv").read_text()


# ---- 1. training -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_task_job_trains_through_srun_and_tests_as_one_process_evaluates(trained, tmp_path):
    log = trained.log
    assert "1 node(s) x 2 task(s) (cpu), nodes localhost" in log
    # Lightning took ranks and world size from srun's tasks (SLURMEnvironment) and joined them over gloo
    assert "distributed: training in 2 processes on 1 node(s) (gloo; ranks from SLURMEnvironment)" in log
    config = json.loads((trained.run_dir / "config.json").read_text())
    assert config["resolved"]["processes"] == 2 and config["model"] == "mel_cnn"
    trained_metrics = read_metrics(trained.run_dir)
    assert trained_metrics["epochs"] == 3

    eval_dir = tmp_path / "evaluation"
    assert run.main(["--evaluate", str(trained.run_dir), "--accelerator", "cpu", "--devices", "1", "--num-workers",
                     "0", "--no-progress", "--logger", "none", "--run-dir", str(eval_dir)]) == 0
    single = read_metrics(eval_dir)
    assert single["test"]["n_clips"] == trained_metrics["test"]["n_clips"] == 21  # every test clip once, uneven ranks
    assert single["best_checkpoint"] == trained_metrics["best_checkpoint"]
    for key in ("roc_auc", "pr_auc", "tpr", "fpr"):
        assert single[key] == pytest.approx(trained_metrics[key], abs=1e-6), key
    for key in ("per_tag_roc_auc", "per_tag_pr_auc"):
        a, b = trained_metrics["test"][key], single["test"][key]
        assert [x is None or math.isnan(x) for x in a] == [x is None or math.isnan(x) for x in b], key
        assert [x for x in a if x is not None and not math.isnan(x)] == pytest.approx(
            [x for x in b if x is not None and not math.isnan(x)], abs=1e-6), key
    assert single["thresholds"] == trained_metrics["thresholds"]
    ddp, one = np.load(trained.run_dir / "test_predictions.npz"), np.load(eval_dir / "test_predictions.npz")
    assert np.array_equal(ddp["clip_ids"], one["clip_ids"])
    assert float(np.abs(ddp["probs"] - one["probs"]).max()) < 1e-6


@pytest.mark.slow
def test_a_two_node_job_trains_as_the_one_node_job(slurm, prepared, trained, tmp_path):
    """Two node daemons on this host (tests/support/slurm_cluster.py), one task each: Lightning's node ranks come from
    SLURM, the first task of each node opens the shared cache, and the result is the two-task job's, exactly
    (the same two ranks, the same data shards)."""
    runs_root, log = tmp_path / "runs", tmp_path / "train.out"
    job = _submit(slurm, TRAIN_SCRIPT, [*TWO_NODES, f"--output={log}"], _train_env(prepared, runs_root),
                  _train_args(prepared))
    _assert_ended(slurm, job, log)
    out = _log(log)
    assert "2 node(s) x 1 task(s) (cpu), nodes localhost,node2" in out
    assert "distributed: training in 2 processes on 2 node(s) (gloo; ranks from SLURMEnvironment)" in out
    run_dir = _run_folder(runs_root)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["processes"] == 2 and config["num_nodes"] == 2 and config["devices"] == 1
    assert run_dir.name == trained.run_dir.name  # where the processes run is not part of a run's identity
    _assert_same_training(trained.run_dir, run_dir)


# ---- 2. preemption -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_requeued_job_resumes_from_its_last_checkpoint_to_the_uninterrupted_result(slurm, prepared, trained,
                                                                                     tmp_path):
    runs_root, log = tmp_path / "runs", tmp_path / "train.out"
    job = _submit(slurm, TRAIN_SCRIPT, [*CPU_NODE, f"--output={log}"], _train_env(prepared, runs_root),
                  _train_args(prepared))
    last = runs_root / trained.run_dir.name / "checkpoints" / "last.ckpt"
    _wait_for(last, slurm, job, log)  # after the first epoch
    slurm.command("scontrol", "requeue", job)  # what a preemption with PreemptMode=REQUEUE does
    record = _assert_ended(slurm, job, log)
    assert record["Restarts"] == "1"
    out = _log(log)
    assert f"job {job} (start 0)" in out and f"job {job} (start 1)" in out  # --open-mode=append: both runs
    assert f"job {job} was requeued (1 time(s))" in out
    assert f"JOB {job} ON localhost CANCELLED AT" in out and "DUE TO JOB REQUEUE" in out  # SLURM's own line
    assert f"resuming {last.parent.parent} from checkpoints/last.ckpt" in out
    _assert_same_training(trained.run_dir, runs_root / trained.run_dir.name)


# ---- 3. time limit -------------------------------------------------------------------------------------------------
TIME_LIMIT_EPOCHS = 11
"""Far more epochs than the uninterrupted job's: the warning is aimed by that job's pace, and this one may start
faster; the spare epochs must outlast the difference between two jobs' start-ups, which the host's load sets."""
RAISED_LIMIT = 10


@pytest.mark.slow
def test_a_job_reaching_its_time_limit_is_signalled_requeues_itself_and_finishes(slurm, prepared, trained,
                                                                                tmp_path):
    """A short limit and lead (`--time`, `--signal`): the controller sends the warning at the first of its
    periodic time-limit checks that falls within the lead plus one period of the limit. The job trains more
    epochs than the uninterrupted one, and is submitted when the next check comes while the uninterrupted
    job was between its first checkpoint and its end: the warning lands in training, with epochs to spare if
    this job runs faster. (On a host so loaded that a first epoch outlasts a check period, the warning can
    only come before the first checkpoint, and the rerun starts over.) Once the job has requeued itself its
    limit is raised: the short limit only brings the time limit inside training here, where a real job's
    limit leaves its resumed run the time it needs (a rerun still training at its own first check would be
    requeued again)."""
    runs_root, log = tmp_path / "runs", tmp_path / "train.out"
    slurm.wait_idle()  # the job starts when it is submitted
    earliest, latest = trained.checkpoints[0] + 1.0, trained.checkpoints[-1]  # seconds from submission
    check = slurm.next_time_limit_check()
    while check - time.time() < earliest:
        check += CHECK_PERIOD
    time.sleep(max(0.0, check - latest - time.time()))
    job = _submit(slurm, TRAIN_SCRIPT, [*CPU_NODE, "--time=1", f"--signal=B:USR1@{SIGNAL_LEAD}", f"--output={log}"],
                  _train_env(prepared, runs_root), _train_args(prepared, TIME_LIMIT_EPOCHS))
    deadline = time.monotonic() + 240
    while f"time limit near: requeueing job {job}" not in _log(log):
        state = slurm.job(job)["JobState"]
        assert state in ALIVE and time.monotonic() < deadline, f"{state}\n{_log(log)[-4000:]}"
        time.sleep(0.1)
    checkpoints = list(runs_root.glob("*/checkpoints/last.ckpt"))  # what the rerun has to resume from
    slurm.command("scontrol", "update", f"JobId={job}", f"TimeLimit={RAISED_LIMIT}")
    record = _assert_ended(slurm, job, log)
    out = _log(log)
    assert record["Restarts"] == "1" and out.count(f"time limit near: requeueing job {job}") == 1
    assert len(re.findall(rf"\*\*\* JOB {job} ON localhost CANCELLED AT \S+ DUE TO JOB REQUEUE", out)) == 1
    # the controller sent it (not a test): SIGUSR1 (10) to the batch shell
    assert len(re.findall(rf"warning signal 10 to JobId={job}\b", slurm.controller_log())) == 1
    assert f"job {job} was requeued (1 time(s))" in out
    run_dir = _run_folder(runs_root)
    warned = out.index(f"time limit near: requeueing job {job}")
    assert f"`max_epochs={TIME_LIMIT_EPOCHS}` reached" not in out[:warned]  # it came while the job trained
    if checkpoints:  # the warning came after an epoch's end: the rerun resumed from its checkpoint
        assert f"resuming {checkpoints[0].parent.parent} from checkpoints/last.ckpt" in out
    assert read_metrics(run_dir)["epochs"] == TIME_LIMIT_EPOCHS
    history = (run_dir / "history.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in history[1:]] == list(range(TIME_LIMIT_EPOCHS))  # each epoch once


# ---- 4. sweeps ---------------------------------------------------------------------------------------------------
SWEEP_TRIALS = 4
TINY_SPACE = {"n_fft": [512, 1024], "hop_length": [1024, 2048], "segments_per_clip": [1, 2]}
SWEEP_TAIL = ["--n-mels", "16", "--logger", "csv", "--sweep-space", json.dumps(TINY_SPACE), "--pruner", "none",
              "--max-epochs", str(KILL_EPOCHS), "--heartbeat-interval", "1", "--grace-period", "60"]
LEASE = "sweep_worker"  # the user attribute a running trial's worker holds (host, pid, ...; sweeps/study.py)


@pytest.fixture(scope="module")
def pg():
    server = server_or_skip()
    yield server
    server.remove()


def _array_task_of(pid: int) -> str | None:
    """The SLURM array task a (live) process belongs to, from its environment."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    found = [v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"SLURM_ARRAY_TASK_ID=")]
    return found[0] if found else None


@pytest.mark.slow
def test_a_sweep_array_shares_one_postgres_study_and_retries_a_cancelled_workers_trial(slurm, prepared, pg,
                                                                                       tmp_path):
    import optuna
    from optuna.trial import TrialState

    url, runs_root, study = pg.create_database(), tmp_path / "runs", "slurm-sweep"
    env = _job_env(prepared.cache_dir, runs_root, STORAGE=url, STUDY=study, TRIALS=str(SWEEP_TRIALS),
                   MODEL="lstm_mel")
    args = [*_data_args(prepared), *SWEEP_TAIL]
    logs = tmp_path / "sweep-%A_%a.out"
    job = _submit(slurm, SWEEP_SCRIPT, ["--array=0-1", *CPU_TASK, f"--output={logs}"], env, args)

    def log(task: str) -> str:
        return _log(tmp_path / f"sweep-{job}_{task}.out")

    storage = optuna.storages.RDBStorage(url)
    trials_root = runs_root / "sweeps" / study / "trials"
    deadline = time.monotonic() + 240
    victim = None
    while victim is None:  # a trial one epoch in, and the array task of its worker
        assert time.monotonic() < deadline and all(r["JobState"] in ALIVE for r in slurm.jobs(job)), \
            log("0")[-3000:] + log("1")[-3000:]
        with_study = [s for s in storage.get_all_studies() if s.study_name == study]
        for trial in optuna.load_study(study_name=study, storage=storage).trials if with_study else []:
            if trial.state == TrialState.RUNNING and LEASE in trial.user_attrs and \
                    (trials_root / f"trial-{trial.number:04d}" / "checkpoints" / "last.ckpt").is_file():
                task = _array_task_of(trial.user_attrs[LEASE]["pid"])
                if task is not None:
                    victim = (trial, task)
                    break
        time.sleep(0.2)
    cancelled, task = victim
    other = "1" if task == "0" else "0"
    slurm.command("scancel", f"{job}_{task}")
    records = {r["ArrayTaskId"]: r for r in slurm.wait(job, 300)}
    assert records[task]["JobState"] == "CANCELLED", log(task)[-3000:]
    assert (records[other]["JobState"], records[other]["ExitCode"]) == ("COMPLETED", "0:0"), log(other)[-4000:]
    assert f"trial {cancelled.number} is queued again" in log(task)

    trials = optuna.load_study(study_name=study, storage=storage).trials
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == SWEEP_TRIALS  # exactly --trials
    assert trials[cancelled.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("retry_history") == [cancelled.number]]
    assert retry.state == TrialState.COMPLETE and retry.params == cancelled.params
    assert retry.user_attrs[LEASE]["pid"] != cancelled.user_attrs[LEASE]["pid"]  # the other worker ran it
    checkpoint = trials_root / f"trial-{cancelled.number:04d}" / "checkpoints" / "last.ckpt"
    assert f"resuming {checkpoint.parent.parent} from checkpoints/last.ckpt" in log(other)  # and resumed it


# ---- 5. reproduction ---------------------------------------------------------------------------------------------
REPRODUCE_ARGS = ["--synthetic-clips", "120", "--synthetic-clip-samples", str(CHUNK_CLIP_SAMPLES), "--no-figures",
                  "--mel-backend", TEST_MEL_BACKEND, "--logger", "none", "--max-epochs", "2",
                  "--limit-train-batches", "2", "--batch-size", "4", "--bootstrap", "200"]


@pytest.mark.slow
def test_reproduce_table4_as_an_array_then_a_table_step(slurm, cache_dir, tmp_path, capsys):
    runs_root = tmp_path / "runs"
    env = _job_env(cache_dir, runs_root, TABLE="table4", SEEDS="0")
    assert run.main(["--reproduce", "table4", "--seeds", "0", "--data", "synthetic", "--cache-dir", str(cache_dir),
                     "--runs-root", str(runs_root), *REPRODUCE_ARGS, "--dry-run"]) == 0
    planned = re.findall(r"^\[(\d+)\] (\w+) seed 0: ", capsys.readouterr().out, re.M)
    assert [model for _, model in planned] == ["mel_cnn", "sample_cnn", "lstm_mel"]

    array = _submit(slurm, REPRODUCE_SCRIPT, [f"--array=0-{len(planned) - 1}", *CPU_TASK,
                                              f"--output={tmp_path}/reproduce-%A_%a.out"], env, REPRODUCE_ARGS)
    table = _submit(slurm, REPRODUCE_SCRIPT, ["--array=0", f"--dependency=afterany:{array}", *CPU_TASK,
                                              f"--output={tmp_path}/table-%A_%a.out"], dict(env, STEP="table"),
                    REPRODUCE_ARGS)
    for record in slurm.wait(array, 400):
        task_log = _log(tmp_path / f"reproduce-{array}_{record['ArrayTaskId']}.out")
        assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), task_log[-4000:]
        index = int(record["ArrayTaskId"])
        assert re.search(rf"^\[{index}\] {planned[index][1]} seed 0: ", task_log, re.M)  # task I ran run I
    (step,) = slurm.wait(table, 200)
    out = _log(tmp_path / f"table-{table}_0.out")
    assert (step["JobState"], step["ExitCode"]) == ("COMPLETED", "0:0"), out[-4000:]
    assert out.count("already holds this finished run") == len(planned)  # the array trained every run
    md = (runs_root / "reproduce" / "table4" / "comparison.md").read_text()
    for config in runs_root.glob("*/config.json"):
        model = json.loads(config.read_text())["model"]
        (line,) = [row for row in md.splitlines() if row.startswith(f"| {model}")]
        assert f"| {read_metrics(config.parent)['roc_auc']:.4f} |" in line
    assert len(list(runs_root.glob("*/metrics.json"))) == len(planned)


# ---- the documentation ---------------------------------------------------------------------------------------------
def test_the_cluster_page_shows_the_commands_as_tested(tiny_cache):
    """docs/cluster.md shows each job's submission with the options these tests give it."""
    page = re.sub(r"[ \t]*\\\n\s*", " ", (REPO_ROOT / "docs" / "cluster.md").read_text())  # continuations joined

    def line(*words: str) -> str:
        return " ".join(words)

    train = line("MODEL=mel_cnn ACCELERATOR=cpu sbatch", *CPU_NODE, TRAIN_SCRIPT, "$TINY", *_train_tail())
    expected = [
        f'TINY="{line(*_data_args(tiny_cache))}"', "export VENV=$PWD/.venv DATA=synthetic", train,
        train.replace(line(*CPU_NODE), line(*TWO_NODES)),
        line("MODEL=mel_cnn ACCELERATOR=cpu sbatch", *CPU_NODE, "--time=1", f"--signal=B:USR1@{SIGNAL_LEAD}",
             TRAIN_SCRIPT, "$TINY", *_train_tail(TIME_LIMIT_EPOCHS)),
        f"scontrol update JobId=$JOBID TimeLimit={RAISED_LIMIT}", "scontrol requeue $JOBID",
        f"STUDY=slurm-sweep TRIALS={SWEEP_TRIALS} MODEL=lstm_mel",
        line("sbatch --array=0-1", *CPU_TASK, SWEEP_SCRIPT, "$TINY", shlex.join(SWEEP_TAIL)),
        "export TABLE=table4 SEEDS=0", f'REPRO="{line(*REPRODUCE_ARGS)}"',
        line("jobid=$(sbatch --parsable --array=0-2", *CPU_TASK, REPRODUCE_SCRIPT, "$REPRO)"),
        line("STEP=table sbatch --array=0 --dependency=afterany:$jobid", *CPU_TASK, REPRODUCE_SCRIPT, "$REPRO"),
    ]
    assert [command for command in expected if command not in page] == []
