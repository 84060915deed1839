"""slurm/reproduce.sbatch at its defaults: the header's array covers the default table, one GPU per task.

tests/integration/test_slurm_real.py submits the script to a real SLURM (an array of one-CPU tasks, then the
table step). What stays here, with SLURM faked (the recorders of tests/support/fake_slurm.py): the
default directives (nine array tasks of one GPU for table4 with seeds 0,1,2) against the
dry-run list, an unknown STEP, and the script's own requeue near the time limit, whose job id
has an array task's form (JOB_TASK); the real time-limit test drives the same trap in
slurm/train_multinode.sbatch.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time

import run
from experiments.cli import parse_command
from experiments.reproduce import passthrough_args, plan_runs
from tests.support.fake_slurm import JOB_ID, REPO_ROOT
from tests.support.fake_slurm import run_py_calls as _run_py_calls

SCRIPT = REPO_ROOT / "slurm" / "reproduce.sbatch"


def _plan(argv):
    from experiments.cli import parse_command
    from experiments.run_folder import default_run_dir

    args = parse_command(argv).comparison
    return plan_runs(args.reproduce, [int(s) for s in args.seeds.split(",")], passthrough_args(argv),
                     lambda a: default_run_dir(run.parse_options(a)))


def test_array_task_runs_the_task_index_of_the_dry_run_list(fake_cluster, tmp_path):
    env, calls = fake_cluster
    result = subprocess.run(["bash", str(SCRIPT), "--max-epochs", "7"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (argv,) = _run_py_calls(calls())
    args = parse_command(argv).comparison
    assert (args.reproduce, args.seeds, args.task_index) == ("table4", "0,1,2", int(env["SLURM_ARRAY_TASK_ID"]))
    planned = _plan(argv)
    # the header's array covers the default table's runs, one task each
    header = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", SCRIPT.read_text(), re.M))
    assert header["array"] == f"0-{len(planned) - 1}" and header["gres"] == "gpu:1"
    task = planned[args.task_index]
    options = run.parse_options(list(task.argv))
    assert (task.model, task.seed) == ("sample_cnn", 0)
    assert options.max_epochs == 7 and options.data == env["DATA"]
    assert options.runs_root == env["RUNS_ROOT"] and options.cache_dir.startswith(env["RUNS_ROOT"])


def test_an_unknown_step_is_refused_in_one_line(fake_cluster, tmp_path):
    env, calls = fake_cluster
    bad = subprocess.run(["bash", str(SCRIPT)], env=dict(env, STEP="everything"), cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "STEP=everything" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not _run_py_calls(calls())


def test_task_requeues_itself_near_the_time_limit(fake_cluster, tmp_path):
    env, calls = fake_cluster
    env = dict(env, FAKE_SRUN_SLEEP="3")
    shell = subprocess.Popen(["bash", str(SCRIPT)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not [c for c in calls() if c[0] == "srun"]:
        assert time.monotonic() < deadline and shell.poll() is None
        time.sleep(0.05)
    shell.send_signal(signal.SIGUSR1)
    stdout, stderr = shell.communicate(timeout=30)
    assert shell.returncode == 0, stderr
    assert ["scontrol", "requeue", f"{JOB_ID}_{env['SLURM_ARRAY_TASK_ID']}"] in calls()
    assert _run_py_calls(calls())
