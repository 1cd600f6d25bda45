"""Prints how long the two fast tiers take, as `make test-program` and `make test-files` run them, and
what they need: CPU seconds (user + system, every process they start), so the wall-time floor on this
machine is that divided by its cores, whatever the parallelism.

    .venv/bin/python bench/tiers.py [--quick]      (or `make bench`)

Target (issue "One role contract..."): both tiers together in <= 30 s of wall time. Per tier it prints
the tests that passed, wall and CPU seconds, and the test files that took longest (pytest's own
durations, summed per file). `--quick` runs one small file of each tier instead (a test runs it so the
bench cannot rot). Figures only: it exits 0 unless a tier failed, and says plainly when the target is
missed.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 30.0
TIERS = ("program", "files")
QUICK_FILES = {"program": "tests/test_facts.py", "files": "tests/test_wire.py"}
_DURATION = re.compile(r"^\s*([\d.]+)s (?:call|setup|teardown)\s+(tests/[^:\s]+)", re.M)


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(tier: str, quick: bool) -> dict:
    """One tier as the Makefile runs it, with every test's duration listed; its CPU is what the
    process tree used (RUSAGE_CHILDREN: each process's own plus that of the children it waited for)."""
    if quick:
        argv = [str(ROOT / ".venv/bin/python"), "-m", "pytest", "-q", "-m", tier, QUICK_FILES[tier]]
    else:
        argv = ["make", "-s", f"test-{tier}"]
    env = dict(os.environ, PYTEST_ADDOPTS="--durations=0 --durations-min=0 -p no:cacheprovider")
    cpu, start = _cpu_of_children(), time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    wall, cpu = time.monotonic() - start, _cpu_of_children() - cpu
    per_file: collections.Counter = collections.Counter()
    for seconds, path in _DURATION.findall(done.stdout):
        per_file[path] += float(seconds)
    passed = re.search(r"(\d+) passed", done.stdout)
    return {"ok": done.returncode == 0, "out": done.stdout, "wall": wall, "cpu": cpu,
            "passed": int(passed.group(1)) if passed else 0, "files": per_file}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small test file per tier")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    print(f"make test-program + make test-files on {cores} core(s){' (quick: one file each)' if args.quick else ''}")
    total_wall = total_cpu = 0.0
    failed = False
    for tier in TIERS:
        r = _run(tier, args.quick)
        total_wall += r["wall"]
        total_cpu += r["cpu"]
        failed |= not r["ok"]
        print(f"  {tier:<8} {r['passed']:5d} passed  {r['wall']:7.1f} s wall  {r['cpu']:7.1f} s CPU  "
              f"(floor here {r['cpu'] / cores:5.1f} s){'' if r['ok'] else '  FAILED'}")
        for path, seconds in r["files"].most_common(5):
            print(f"      {seconds:6.1f} s  {path}")
        if not r["ok"]:
            print(r["out"][-3000:])
    print(f"  together {total_wall:7.1f} s wall  {total_cpu:7.1f} s CPU  (floor here {total_cpu / cores:5.1f} s)")
    if not args.quick:
        verdict = "met" if total_wall <= TARGET_S else "MISSED"
        print(f"  target <= {TARGET_S:.0f} s wall: {verdict}"
              + ("" if total_cpu / cores <= TARGET_S else f" (the CPU they need alone is {total_cpu / cores:.0f} s on {cores} cores)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
