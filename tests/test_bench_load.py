"""bench/load_scale.py keeps working: its quick mode runs every measurement and prints a line for each."""

from __future__ import annotations

import re
import subprocess
import sys

from model.load import ROOT
import pytest

pytestmark = pytest.mark.program


def test_the_load_bench_runs_in_quick_mode_and_prints_its_figures():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load_scale.py"), "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for what in ("hosts in a stack file", "rows of shortlinks.csv", "aliases in one chain"):
        line = next((l for l in lines if what in l), None)
        assert line is not None, done.stdout
        assert re.search(r"\d+\.\d\d s \( *\d+\.\d\d s CPU\)  peak +\d+\.\d MB", line), line
