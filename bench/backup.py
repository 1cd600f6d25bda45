"""Backup and restore wall times for the backup lab's data set, with real borg on lab hosts.

    .venv/bin/python bench/backup.py [--json] [--quick]

Brings up the backup lab (lab/backup.py: gateway, target, two clients, offsite server), then
times, in this order: each client's first (full) backup and a second one (nothing changed), the
target's prune, the restore drill (borg check + extract of every repository), the offsite copy,
and a restore of c1's latest archive onto c2 (borg export-tar streamed through the gateways). As
root, where the lab runs (make setup). `--quick` (tests/test_bench_lab.py, so the bench cannot rot)
leaves out the second, unchanged backups: one round of everything else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops import restore_drill  # noqa: E402
from lab.backup import CLIENTS, FRONT, LAN, PREFIX, TARGET, lab_hosts, prepare, start_unit  # noqa: E402
from lab.hosts import Lab, available  # noqa: E402
from render.roles import backup as rb  # noqa: E402


def run(quick: bool = False) -> dict:
    ok, why = available()
    if not ok:
        raise SystemExit(f"the lab cannot run here: {why}")
    with Lab(PREFIX, lab_hosts(), front=str(FRONT), lan=str(LAN)) as lab:
        p = prepare(lab)
        t = dict(p.timings)

        def timed(host: str, unit: str, label: str) -> None:
            r, seconds = start_unit(lab, host, unit)
            if r.returncode != 0:
                raise SystemExit(f"{label}: {unit} failed on {host}:\n"
                                 + lab.run(host, f"journalctl -u {unit} -n 30 --no-pager -o cat", check=False).stdout)
            t[label] = seconds

        for c in CLIENTS:
            timed(c, f"{rb.CLIENT_UNIT}.service", f"backup {c}, first (full)")
        for c in () if quick else CLIENTS:
            timed(c, f"{rb.CLIENT_UNIT}.service", f"backup {c}, second (unchanged)")
        timed(TARGET, "hypha-borg-prune.service", "prune + compact, both repositories")
        timed(TARGET, "hypha-borg-drill.service", "restore drill, both repositories")
        timed(TARGET, "hypha-borg-offsite.service", "offsite copy, both repositories")
        try:
            status, _ = restore_drill.fetch_status(p.ls.stack, p.ls.keys["deploy"].private_openssh)
        except Exception:
            for h in ("gw", TARGET):
                print(h, lab.run(h, "ss -ltnp; systemctl status ssh --no-pager | head -20; nft list ruleset | head -30; "
                                    "journalctl -u ssh -n 20 --no-pager", check=False).stdout, file=sys.stderr)
            raise
        for c in CLIENTS:
            t[f"drill: borg check {c}"] = status["repositories"][c]["check_seconds"]
            t[f"drill: extract {c}"] = status["repositories"][c]["extract_seconds"]
        _, seconds = restore_drill.restore(p.ls.stack, "c1", p.ls.stack, "c2", p.ls.keys["deploy"].private_openssh)
        t["restore c1's latest archive onto c2"] = seconds
        report, code = restore_drill.report(p.ls.stack, status)
        return {"data_mib": {c: round(n / 2**20, 1) for c, n in p.sizes.items()}, "database": p.database,
                "seconds": {k: round(v, 2) for k, v in t.items()}, "drill_report": report, "drill_exit": code}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="one backup per client, then the rest once")
    args = parser.parse_args(argv)
    out = run(args.quick)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print("data set: " + ", ".join(f"{c} {m} MiB" for c, m in out["data_mib"].items())
          + (" (c1 also dumps a PostgreSQL database)" if out["database"] else ""))
    for k, v in out["seconds"].items():
        print(f"  {k:<45} {v:7.2f} s")
    print("\n" + out["drill_report"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
