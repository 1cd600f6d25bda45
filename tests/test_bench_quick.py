"""The benches that need no lab keep working: each runs in its quick mode (smallest sizes, one round)
and prints its figures, so a change that breaks a bench fails the suite (the lab ones:
tests/test_bench_lab.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from model.load import ROOT

pytestmark = pytest.mark.program


def _bench(name: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / name), "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_load_bench_runs_in_quick_mode_and_prints_its_figures():
    lines = _bench("load_scale.py").splitlines()
    for what in ("hosts in a stack file", "rows of shortlinks.csv", "aliases in one chain"):
        line = next((l for l in lines if what in l), None)
        assert line is not None, lines
        assert re.search(r"\d+\.\d\d s \( *\d+\.\d\d s CPU\)  peak +\d+\.\d MB", line), line


def test_the_plan_bench_plans_generated_stacks_and_prod_in_quick_mode():
    out = _bench("plan_scale.py")
    for hosts in (5, 10):
        # Generated stacks of n hosts plan to more resources than hosts (VMs, snippets, firewalls, converges).
        m = re.search(rf"^ +{hosts} +(\d+) +\d+\.\d{{3}} ", out, flags=re.M)
        assert m and int(m.group(1)) > hosts, out
    assert re.search(r"offline plan, real prod \(once\): \d+\.\d\d s, exit code 0", out), out

