"""
A static check of the whole code base with pyflakes: undefined names, unused imports and variables.

Some branches never run on a CPU-only CI machine (CUDA memory reports, MFU, out-of-memory advice, NCCL), so a
typo there would first show on a rented GPU node, hours into a run. pyflakes reads every line without running it.

    python -m pytest tests/test_static.py -q
"""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_pyflakes_finds_nothing():
    pytest.importorskip("pyflakes", reason="pyflakes is in the dev group: bash scripts/setup.sh installs it")
    dirs = [str(ROOT / d) for d in ("nanochat", "scripts", "tasks", "tests")]
    run = subprocess.run([sys.executable, "-m", "pyflakes", *dirs], capture_output=True, text=True)
    assert run.returncode == 0 and not run.stdout.strip(), "pyflakes:\n" + run.stdout + run.stderr
