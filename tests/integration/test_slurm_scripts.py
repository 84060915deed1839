"""The SLURM recipes in slurm/ at their GPU defaults: valid bash, run.py command lines that parse, one task per GPU.

tests/integration/test_slurm_real.py submits the scripts to a real SLURM (one node of CPUs): the directives,
srun's tasks, requeues, the time-limit signal and the job arrays are tested there. What a node
without GPUs cannot show stays here: the command lines the scripts build from their default
directives (2 nodes x 4 GPUs, one GPU per sweep or reproduction task), and the refusal to run
outside sbatch. Each script runs under bash with SLURM's environment faked and `srun`,
`scontrol` and `python` replaced by recorders (a fake venv whose `activate` puts them first on
PATH; scripts take the venv from $VENV and the repository from $REPO). The recorded
`python run.py ...` argument lists, as bash expanded them, must parse with `run.build_parser()`
and give valid options.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

import run
from tests.support.fake_slurm import run_py_calls as _run_py_calls
from tests.support.paths import REPO_ROOT

SCRIPTS = sorted((REPO_ROOT / "slurm").glob("*.sbatch"))
def _static_run_py_commands(script: Path) -> int:
    """Command lines (comments dropped, continuations joined) that mention run.py."""
    text = re.sub(r"\\\n", " ", script.read_text())
    return sum("run.py" in line for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_there_are_scripts_to_check():
    assert {s.name for s in SCRIPTS} >= {"train_multinode.sbatch", "sweep_worker.sbatch"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert script.read_text().startswith("#!/bin/bash\n")
    assert re.search(r"^#SBATCH ", script.read_text(), re.M)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_run_py_command_the_script_runs_parses(script, fake_cluster, tmp_path):
    env, calls = fake_cluster
    extra = ["--max-epochs", "7"]  # arguments after the script go to run.py
    result = subprocess.run(["bash", str(script), *extra], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    commands = _run_py_calls(calls())
    assert commands and len(commands) >= _static_run_py_commands(script)
    for argv in commands:
        options = run.parse_options(argv)  # SystemExit (exit code 2) on a bad command line
        assert options.max_epochs == 7, argv
        assert options.cache_dir.startswith(env["RUNS_ROOT"]) and options.data == env["DATA"]


def test_multinode_script_runs_one_ddp_task_per_gpu_on_every_node(fake_cluster, tmp_path):
    script = REPO_ROOT / "slurm" / "train_multinode.sbatch"
    header = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", script.read_text(), re.M))
    assert header["gres"] == f"gpu:{header['ntasks-per-node']}"  # one task per GPU
    assert "requeue" in re.findall(r"^#SBATCH --([\w-]+)$", script.read_text(), re.M)
    assert header["signal"].startswith("B:USR1@")  # to the batch shell, whose trap requeues

    env, calls = fake_cluster
    result = subprocess.run(["bash", str(script), "--precision", "bf16-mixed"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (srun,) = [call for call in calls() if call[0] == "srun"]
    assert srun[1:3] == ["--kill-on-bad-exit=1", "python"]
    (argv,) = _run_py_calls(calls())
    options = run.parse_options(argv)
    assert (options.devices, options.num_nodes, options.strategy, options.accelerator) == (4, 2, "ddp",
                                                                                                       "gpu")
    assert options.precision == "bf16-mixed" and options.model == "sample_cnn"
    # no job-specific run folder: the default one (named by the options) is the same when the job runs again
    assert options.run_dir is None and options.runs_root == env["RUNS_ROOT"]


def test_multinode_script_refuses_to_run_without_slurm(fake_cluster, tmp_path):
    env, _ = fake_cluster
    env = {k: v for k, v in env.items() if k != "SLURM_JOB_NUM_NODES"}
    result = subprocess.run(["bash", str(REPO_ROOT / "slurm" / "train_multinode.sbatch")], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "submit this script with sbatch" in result.stderr
    assert os.listdir(env["FAKE_RECORD_DIR"]) == []
