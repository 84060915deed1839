"""A faked SLURM for the cluster-script tests: `srun`, `scontrol` and `python` replaced by recorders.

A fake venv whose `activate` puts the recorders first on PATH; the scripts take the venv from
$VENV and the repository from $REPO. `fake_cluster` (tests/conftest.py) hands a test the
environment and a function returning the recorded calls, oldest first.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.paths import REPO_ROOT

JOB_ID = "4242"

RECORDER = """#!/bin/bash
# records its name and arguments (NUL-separated), then acts like the command it stands in for
record=$(mktemp "$FAKE_RECORD_DIR/call.XXXXXX")
printf '%s\\0' "$(basename "$0")" "$@" > "$record"
if [[ "$(basename "$0")" == srun ]]; then
  sleep "${FAKE_SRUN_SLEEP:-0}"
  while [[ "$1" == -* ]]; do shift; done   # srun's own options
  exec "$@"
fi
"""


def make_fake_cluster(tmp_path: Path):
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "activate").write_text(f'export PATH="{venv_bin}:$PATH"\n')
    for name in ("srun", "scontrol", "python", "python3"):
        (venv_bin / name).write_text(RECORDER)
        (venv_bin / name).chmod(0o755)
    records = tmp_path / "records"
    records.mkdir()
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VENV": str(tmp_path / "venv"), "REPO": str(REPO_ROOT),
        "FAKE_RECORD_DIR": str(records), "DATA": "/shared/mtat", "RUNS_ROOT": str(tmp_path / "runs"),
        "STORAGE": f"journal:{tmp_path}/study.log", "SLURM_SUBMIT_DIR": str(REPO_ROOT), "SLURM_JOB_ID": JOB_ID,
        "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "4", "SLURM_GPUS_ON_NODE": "4",
        "SLURM_CPUS_PER_TASK": "8", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_ARRAY_JOB_ID": JOB_ID,
        "SLURM_ARRAY_TASK_ID": "3",
    }

    def calls() -> list[list[str]]:
        found = []
        for path in sorted(records.iterdir(), key=lambda p: p.stat().st_mtime_ns):
            found.append(path.read_bytes().decode().split("\0")[:-1])
        return found

    return env, calls


def run_py_calls(calls: list[list[str]]) -> list[list[str]]:
    """The argument lists after `run.py` of every recorded `python run.py ...`."""
    return [call[2:] for call in calls if call[0].startswith("python") and len(call) > 1
            and Path(call[1]).name == "run.py"]
