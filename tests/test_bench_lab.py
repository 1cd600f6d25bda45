"""The lab benches keep working: each runs in its quick mode (one round, the fewest hosts) and prints
its figures, so a change that breaks a bench fails the suite. They boot lab hosts, hence this tier."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from model.load import ROOT
from lab.hosts import available

pytestmark = pytest.mark.lab

OK, WHY = available()


def _bench(name: str, timeout: float = 600) -> str:
    if not OK:
        pytest.skip(f"lab unavailable: {WHY}")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / name), "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_converge_bench_converges_a_bare_host_and_re_runs_it_in_quick_mode():
    out = _bench("converge.py")
    assert re.search(r"ours    first converge +\d+\.\d\d s  ok;", out), out
    assert re.search(r"ours    re-run +\d+\.\d\d s  ok;", out), out
    assert "units the re-run started or restarted: none" in out, out


def test_the_drift_bench_checks_a_converged_lab_clean_in_quick_mode():
    out = _bench("drift_scale.py")
    for n in (2, 3):
        assert re.search(rf"^ +{n} hosts: \d+\.\d\d s \(median of 1", out, flags=re.M), out


def test_the_backup_bench_times_backup_prune_drill_offsite_and_restore_in_quick_mode():
    out = _bench("backup.py")
    for what in ("backup c1, first (full)", "prune + compact", "restore drill", "offsite copy",
                 "restore c1's latest archive onto c2"):
        assert re.search(re.escape(what) + r".* +\d+\.\d\d s$", out, flags=re.M), out
