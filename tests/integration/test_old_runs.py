"""Run folders written before the repository was restructured still work: found, evaluated, resumed exactly.

The restructuring moved almost every module (`lightning_modules/runner` to `experiments`, the data readers to
`datamodules/datasets`, the store to `datamodules/store`, ...), and a checkpoint is a pickle that names classes
by their module, a run folder is found by a digest of its options, and a waveform store by its fingerprint.
So the old code itself writes the run here: the last commit before the change is taken out of the repository's
history (`git archive`), its own kill script trains a tiny run and SIGKILLs it at the start of its second
epoch, and this code then:

* finds that run folder under the name the old code gave it (the same command, the same folder);
* evaluates the old code's checkpoint (`--evaluate`);
* resumes the run from the old checkpoint, reading the old code's waveform store, to the test metrics,
  thresholds and history of an uninterrupted run of this code, exactly.

Without that commit in the history (a shallow clone) the test skips, saying why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import run
from experiments.run_folder import default_run_dir
from tests.support.helpers import TINY_MEL_ARGS, read_metrics
from tests.support.paths import REPO_ROOT

OLD_COMMIT = "8772fdd"
"""The last commit of the layout before the restructuring."""

pytestmark = pytest.mark.slow


def _old_tree(tmp: Path) -> Path:
    probe = subprocess.run(["git", "cat-file", "-e", f"{OLD_COMMIT}^{{commit}}"], cwd=REPO_ROOT, capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"commit {OLD_COMMIT} (the layout before the restructuring) is not in this clone's history "
                    "(a shallow clone?): no old code to write an old run")
    tree = tmp / "old"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", OLD_COMMIT], cwd=REPO_ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def _options(cache: Path, runs_root: Path) -> list[str]:
    # the paper's lstm_mel (fixed segments, SGD with both decays), small; options both versions know
    return ["--model", "lstm_mel", "--data", "synthetic", "--synthetic-clips", "96", "--synthetic-clip-samples",
            "48000", "--cache-dir", str(cache), "--num-workers", "0", "--no-progress", "--no-figures",
            "--mel-backend", "torchaudio", *TINY_MEL_ARGS["lstm_mel"], "--max-epochs", "2", "--patience", "1",
            "--logger", "csv", "--runs-root", str(runs_root)]


def test_a_run_of_the_old_layout_is_found_evaluated_and_resumed_exactly(tmp_path, capsys):
    old = _old_tree(tmp_path)
    cache, old_runs, new_runs = tmp_path / "cache", tmp_path / "old-runs", tmp_path / "new-runs"
    options = _options(cache, old_runs)
    # the old code, in its own tree, with its own kill script: SIGKILLed at the first batch of epoch 1
    killed = subprocess.run([sys.executable, "-m", "tests.kill_during", "train", "1", "0", *options], cwd=old,
                            env={**_clean_env(), "PYTHONPATH": str(old)}, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    (old_dir,) = old_runs.iterdir()
    old_checkpoint = old_dir / "checkpoints" / "last.ckpt"
    assert old_checkpoint.is_file() and not (old_dir / "metrics.json").exists()

    # the same command finds the same folder
    assert default_run_dir(run.parse_options(options)) == old_dir.resolve()

    # the old checkpoint evaluates (its pickled configuration names classes of the old layout)
    evaluated = tmp_path / "evaluated"
    assert run.main(["--evaluate", str(old_checkpoint), "--run-dir", str(evaluated), "--cache-dir", str(cache),
                     "--num-workers", "0", "--no-progress", "--no-figures", "--logger", "none"]) == 0
    assert 0.0 <= read_metrics(evaluated)["roc_auc"] <= 1.0

    # resumed by this code from the old checkpoint and the old store, it ends where an uninterrupted run of this
    # code ends
    capsys.readouterr()
    assert run.main(options) == 0
    assert "resuming" in capsys.readouterr().err
    assert run.main(_options(cache, new_runs)) == 0
    (new_dir,) = new_runs.iterdir()
    assert new_dir.name == old_dir.name
    resumed, uninterrupted = read_metrics(old_dir), read_metrics(new_dir)
    for key in ("roc_auc", "pr_auc", "tpr", "fpr", "thresholds"):
        assert resumed[key] == uninterrupted[key], key
    assert (old_dir / "history.csv").read_text() == (new_dir / "history.csv").read_text()
    assert json.loads((old_dir / "config.json").read_text())["model"] == "lstm_mel"


def _clean_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
