"""What a person reads: a training and an --evaluate, run as a user runs them, print only their results on stdout,
and on stderr only the progress bars and the suite's own lines (no Lightning tips, info lines, model table or
warnings the user cannot act on; no W&B banner or end-of-run summary; one `wandb sync` line)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.helpers import TINY_MEL_ARGS
from tests.support.paths import REPO_ROOT

# The lines stderr may hold besides the progress bars (the suite's bars draw "▕...▏"): the suite's W&B notes and
# the bars of the data preparation (when this session's tiny set is not prepared yet).
ALLOWED_STDERR = re.compile(r"(W&B: logging offline into |W&B: logged offline; upload with: wandb sync "
                            r"|synthetic MTAT -> |decoding clips)")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _run(argv: list[str]) -> tuple[list[str], list[str]]:
    """stdout lines and stderr lines (split at carriage returns too, escape codes removed) of `run.py argv`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # as on a workstation
    env["WANDB_MODE"] = "offline"  # the default W&B logger, never online from a test
    result = subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), *argv], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    err = [line.strip() for line in re.split(r"[\r\n]", ANSI.sub("", result.stderr)) if line.strip()]
    return result.stdout.splitlines(), err


def _unexpected(err: list[str]) -> list[str]:
    return [line for line in err if "▕" not in line and not ALLOWED_STDERR.match(line)]


@pytest.mark.slow
def test_training_and_evaluate_print_results_on_stdout_and_only_progress_on_stderr(tiny_cache, tmp_path):
    run_dir, eval_dir = tmp_path / "run", tmp_path / "evaluation"
    data = [a for a in tiny_cache.args() if a != "--no-progress"]
    out, err = _run(["--model", "mel_cnn", *data, *TINY_MEL_ARGS["mel_cnn"], "--max-epochs", "1",
                     "--limit-train-batches", "2", "--run-dir", str(run_dir)])  # the default logger: W&B
    assert len(out) == 2 and re.fullmatch(r"test ROC-AUC 0\.\d{4}  PR-AUC 0\.\d{4}  TPR \d\.\d{3}  FPR \d\.\d{3}", out[0])
    assert out[1] == f"run folder: {run_dir}"
    assert _unexpected(err) == []
    assert any(line.startswith("epoch 1/1 ▕") and "loss " in line and "val AUC " in line for line in err)
    assert any(line.startswith("test ▕") for line in err)
    (sync,) = [line for line in err if "wandb sync" in line]  # one line, the suite's; wandb's own hint is gone
    assert sync.startswith(f"W&B: logged offline; upload with: wandb sync {run_dir / 'wandb' / 'offline-run-'}")

    out, err = _run(["--evaluate", str(run_dir), "--run-dir", str(eval_dir)])  # progress on, as saved
    assert len(out) == 2 and re.fullmatch(r"test ROC-AUC .*  \(\d+ clips\)", out[0])
    assert out[1] == f"evaluation folder: {eval_dir}"
    assert _unexpected(err) == [] and any(line.startswith("test ▕") for line in err)
