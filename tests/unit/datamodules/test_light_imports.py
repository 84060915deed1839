"""The data modules the command line reads its choices and defaults from import nothing heavier than numpy.

`run.py --help` and option errors must come back fast: these modules keep soundfile, the waveform store,
tqdm, pandas, scipy and torch inside the functions that need them.
"""

import subprocess
import sys

import pytest

from tests.support.paths import REPO_ROOT

HEAVY = ("torch", "lightning", "pandas", "soundfile", "tqdm", "scipy")


@pytest.mark.parametrize("module", [
    "datamodules.datasets.mtat.reader", "datamodules.datasets.mtat.standin", "datamodules.datasets.jamendo.reader",
    "datamodules.datasets.jamendo.splits", "datamodules.datasets.jamendo.standin", "datamodules.segments",
    "datamodules.store"])
def test_module_imports_nothing_heavy(module):
    code = (f"import sys, {module}; "
            f"print(' '.join(name for name in {HEAVY!r} if name in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [], f"importing {module} imports {out.stdout.strip()}"
