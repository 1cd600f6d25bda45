"""Prints load + validate time and peak memory for a 1,000-host stack file, a 100,000-row shortlinks.csv
and a 100,000-alias chain, each measured in a fresh interpreter.

    .venv/bin/python bench/load_scale.py [--quick]      (or `make bench`)

Targets: the CSV in ≤ 2 s and ≤ 150 MB peak (ru_maxrss of the process, interpreter included), the
alias chain in ≤ 2 s; times judged in CPU seconds, wall time printed beside them. The stack file is timed from its bytes: read, parse, validate (model.load.load_stack).
`--quick` runs small sizes (a test runs it so the bench cannot rot). Figures only: it exits 0 unless a
measurement itself failed, and says plainly when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_CSV_S = 2.0
TARGET_CSV_MB = 150.0
TARGET_CHAIN_S = 2.0
FULL = {"hosts": 1_000, "rows": 100_000, "chain": 100_000}
QUICK = {"hosts": 50, "rows": 5_000, "chain": 5_000}
SHORTENER = "link.hypha.coop"


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _write_stack(root: Path, hosts: int) -> int:
    import yaml

    from bench.stackgen import generate
    from model.load import PROJECT

    shutil.copy(ROOT / "Pulumi.yaml", root / "Pulumi.yaml")
    raw = generate(hosts)
    text = yaml.safe_dump({"config": {f"{PROJECT}:{k}": v for k, v in raw.items()}}, sort_keys=False)
    (root / "Pulumi.prod.yaml").write_text(text)
    return len(text.encode())


def _write_csv(path: Path, rows: int, chain: bool) -> int:
    lines = ["keyword,destination_url"]
    if chain:
        # k0 is real; k<i> points at k<i-1>: one chain through every row, written last link first.
        lines += [f"k{i},https://{SHORTENER}/k{i - 1}" for i in range(rows - 1, 0, -1)] + ["k0,https://hypha.coop/"]
    else:
        lines += [f"link-{i},https://handbook.hypha.coop/page/{i}?ref=short#{i % 97}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path.stat().st_size


def child(case: str, size: int) -> dict:
    """One measurement, in this (fresh) process: prepare the input, then time what it takes."""
    work = Path(tempfile.mkdtemp(prefix="hypha-bench-load-"))
    try:
        if case == "stack":
            from model.load import load_stack

            nbytes = _write_stack(work, size)
            base = _maxrss_mb()
            started, cpu = time.perf_counter(), time.process_time()
            stack = load_stack("prod", work)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert len(stack.hosts) == size
        else:
            from render import shortlinks

            path = work / "shortlinks.csv"
            nbytes = _write_csv(path, size, chain=case == "chain")
            base = _maxrss_mb()
            started, cpu = time.perf_counter(), time.process_time()
            links = shortlinks.load(path, shortener_host=SHORTENER)
            rendered = shortlinks.render_map(links)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            assert len(links) == size and rendered.count(";") >= 2 * size
        return {"case": case, "size": size, "bytes": nbytes, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
                "peak_mb": round(_maxrss_mb(), 1), "base_mb": round(base, 1)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(case: str, size: int) -> dict:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", case, str(size)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"load_scale: the {case} measurement failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/load_scale.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for the test that keeps the bench working")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return 0
    sizes = QUICK if args.quick else FULL
    load = os.getloadavg()[0]
    print(
        f"Load + validate ({'quick' if args.quick else 'full'} sizes; peak = ru_maxrss of a fresh interpreter; "
        f"load average {load:.1f} on {os.cpu_count()} CPUs: wall time grows with it, CPU time much less)"
    )
    results = [measure("stack", sizes["hosts"]), measure("csv", sizes["rows"]), measure("chain", sizes["chain"])]
    labels = {"stack": "hosts in a stack file", "csv": "rows of shortlinks.csv", "chain": "aliases in one chain"}
    for r in results:
        print(
            f"  {r['size']:>7,} {labels[r['case']]:<22} {r['bytes'] / 1e6:6.2f} MB  {r['seconds']:6.2f} s "
            f"({r['cpu_seconds']:5.2f} s CPU)  "
            f"peak {r['peak_mb']:6.1f} MB (before loading {r['base_mb']:.1f} MB)"
        )
    if not args.quick:
        _, csv, chain = results
        # Times are judged on CPU seconds: on a shared machine wall time measures the neighbours too.
        # On an idle machine the two agree within a few percent.
        for ok, what in (
            (csv["cpu_seconds"] <= TARGET_CSV_S, f"CSV time {csv['cpu_seconds']} s CPU (target ≤ {TARGET_CSV_S} s)"),
            (csv["peak_mb"] <= TARGET_CSV_MB, f"CSV peak {csv['peak_mb']} MB (target ≤ {TARGET_CSV_MB:.0f} MB)"),
            (chain["cpu_seconds"] <= TARGET_CHAIN_S, f"chain time {chain['cpu_seconds']} s CPU (target ≤ {TARGET_CHAIN_S} s)"),
        ):
            print(f"  {'ok  ' if ok else 'MISS'} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
