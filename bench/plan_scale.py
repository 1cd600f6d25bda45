"""Prints how long the offline plan takes for generated stacks of 10, 100 and 500 hosts, and for real prod.

    .venv/bin/python bench/plan_scale.py [--quick]      (or `make bench`)

Targets: 500 hosts under 15 s with per-host time roughly constant, real prod plan under 3 s.
`--quick` plans 5 and 10 hosts and prod once each, judging no target (tests/test_bench_quick.py runs
it so the bench cannot rot). Figures only: it exits 0 and says plainly when a target is missed;
non-zero only when it could not measure (a generated stack refused, the prod plan failing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stackgen import generate  # noqa: E402
from ops.mockrun import run_stack  # noqa: E402
from model.load import build_stack  # noqa: E402

SIZES = (10, 100, 500)
REPEATS = {10: 3, 100: 3, 500: 1}
QUICK_SIZES = (5, 10)
TARGET_500_S = 15.0
TARGET_PROD_S = 3.0
# Linear growth: per-host time at 500 hosts within this factor of that at 100 hosts.
LINEAR_FACTOR = 2.0


def time_size(hosts: int, repeats: int) -> tuple[int, float]:
    raw = generate(hosts)
    build_stack(raw, "prod")  # a generated stack that fails validation would time an error path
    best = float("inf")
    resources = 0
    for _ in range(repeats):
        started = time.perf_counter()
        run = run_stack("prod", raw=raw)
        best = min(best, time.perf_counter() - started)
        resources = len(run.resources)
    return resources, best


def time_prod_plan(repeats: int = 3) -> tuple[float, int]:
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        python = Path(sys.executable)
    best, code = float("inf"), 0
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(
            [str(python), "-m", "ops.plan", "--stack", "prod"], cwd=ROOT, capture_output=True, env=os.environ.copy()
        )
        best = min(best, time.perf_counter() - started)
        code = done.returncode
    return best, code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/plan_scale.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 and 10 hosts, one round, no targets judged")
    args = parser.parse_args(argv)
    run_stack("prod", raw=generate(5))  # warm-up: imports, templates, pydantic schemas are not counted
    rows = {}
    print(f"{'hosts':>6} {'resources':>10} {'wall s':>9} {'res/s':>9} {'s/host':>9}  runs")
    for n in QUICK_SIZES if args.quick else SIZES:
        repeats = 1 if args.quick else REPEATS[n]
        resources, secs = time_size(n, repeats)
        rows[n] = (resources, secs)
        print(f"{n:>6} {resources:>10} {secs:>9.3f} {resources / secs:>9.1f} {secs / n:>9.4f}  best of {repeats}")
    if args.quick:
        prod_s, code = time_prod_plan(repeats=1)
        print(f"\noffline plan, real prod (once): {prod_s:.2f} s, exit code {code}")
        return 0 if code == 0 else 1

    per_host = {n: secs / n for n, (_, secs) in rows.items()}
    print()
    print(f"per-host time 500 vs 10:  {per_host[500] / per_host[10]:.2f}x")
    print(f"per-host time 500 vs 100: {per_host[500] / per_host[100]:.2f}x")
    linear = per_host[500] <= LINEAR_FACTOR * per_host[100]
    print(f"linear: {'yes' if linear else 'no'} (rule: per-host time at 500 within {LINEAR_FACTOR:g}x of that at 100)")
    if not linear:
        print("  TARGET MISSED: growth is superlinear")
    under = rows[500][1] < TARGET_500_S
    print(f"500 hosts under {TARGET_500_S:g} s: {'yes' if under else 'no'} ({rows[500][1]:.2f} s)")
    if not under:
        print(f"  TARGET MISSED: 500 hosts took {rows[500][1]:.2f} s")

    prod_s, code = time_prod_plan()
    print()
    note = "" if code == 0 else f", exit code {code}"
    print(f"offline plan, real prod (`.venv/bin/python -m ops.plan --stack prod`, best of 3): {prod_s:.2f} s{note}")
    prod_ok = prod_s < TARGET_PROD_S
    print(f"prod plan under {TARGET_PROD_S:g} s: {'yes' if prod_ok else 'no'}")
    if not prod_ok:
        print(f"  TARGET MISSED: prod plan took {prod_s:.2f} s")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
