"""Prints how long `ops drift` takes over 5, 10 and 20 converged lab hosts (hosts are checked in parallel).

    .venv/bin/python bench/drift_scale.py [--quick]      (or `make bench`; root: it runs the lab of lab/hosts.py)

One lab of 20 hosts (a gateway and 19 others) is booted and converged once; the check then runs
over the gateway plus the first 4, 9 and 19 others, three times each, and the median is printed.
Targets: 20 hosts in under 5 s, and growth well below linear (20 hosts cost under half of
4 x the 5-host time). `--quick` (tests/test_bench_lab.py, so the bench cannot rot): 3 hosts, checked
over 2 and 3, once each, no target judged. Figures only: exits 0 and says plainly when a target is missed; non-zero
only when it could not measure at all.
"""

from __future__ import annotations

import concurrent.futures
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import stack as labstack  # noqa: E402
from ops.drift import check  # noqa: E402
from lab.hosts import Lab, available, layout  # noqa: E402
from lab.stack import LabStack, lab_stack  # noqa: E402
from ops.remote import PINS, converge  # noqa: E402
from lab.subnets import subnets  # noqa: E402
from model.load import read_stack_config  # noqa: E402

PREFIX = "hds"
FRONT, LAN, VPN = subnets(PREFIX).front, subnets(PREFIX).lan, subnets(PREFIX).vpn
SIZES = (5, 10, 20)
REPEATS = 3
TARGET_20 = 5.0
# "Well below linear": 4x the hosts must cost less than half of 4x the time.
TARGET_GROWTH = 2.0


def _roomy_prod(name: str, root=None) -> dict:
    """prod's config on a node big enough for 20 default hosts (kvm1 itself offers 24 vCPUs)."""
    raw = read_stack_config(name) if root is None else read_stack_config(name, root)
    for node in raw["proxmox"]["nodes"].values():
        node["cores"] = 64
    return raw


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy so far (all cores, every process: checker and lab hosts)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def bring_up(lab: Lab, ls: LabStack, workers: int = 4) -> list[str]:
    """First boot everywhere, converge the gateway, then the others a few at a time (not the whole
    fleet at once: each converge dials the gateway, whose sshd drops beyond 10 pending logins).
    Returns the hosts whose converge failed twice."""
    hosts = list(ls.stack.hosts)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda h: lab.first_boot(h, ls.user_data(h)), hosts))
    PINS.add(ls.known_hosts())  # the sessions below trust the lab's host keys only
    for h in hosts:  # cloud-init restarted sshd; wait until it is back (bounded)
        for _ in range(100):
            if lab.run(h, ["systemctl", "is-active", "-q", "ssh"], check=False).returncode == 0:
                break
            time.sleep(0.1)
    key = ls.keys["deploy"].private_openssh

    def once(h: str) -> bool:
        for _attempt in range(2):
            try:
                if converge(ls.stack, h, key, ls.script(h)).ok:
                    return True
            except Exception:  # noqa: BLE001 - one retry, then reported
                time.sleep(2)
        return False

    failed = [] if once(hosts[0]) else [hosts[0]]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        failed += [h for h, ok in zip(hosts[1:], pool.map(once, hosts[1:])) if not ok]
    return failed


def main(argv: list[str] | None = None) -> int:
    global SIZES, REPEATS
    quick = "--quick" in (sys.argv[1:] if argv is None else argv)
    if quick:
        SIZES, REPEATS = (2, 3), 1
    ok, why = available()
    if not ok:
        print(f"bench/drift_scale.py: cannot run a lab here: {why}", file=sys.stderr)
        return 1
    hosts = ("gw", *(f"h{i:02d}" for i in range(1, max(SIZES))))
    labstack.read_stack_config = _roomy_prod  # lab_stack reads the stack file itself
    ls = lab_stack("prod", hosts=hosts, front=FRONT, lan=LAN, vpn=VPN)
    key = ls.keys["deploy"].private_openssh
    started = time.monotonic()
    with Lab(PREFIX, layout(hosts[0], hosts[1:], front=str(FRONT), lan=str(LAN)), front=str(FRONT), lan=str(LAN)) as lab:
        failed = bring_up(lab, ls)
        if failed:
            print(f"converge failed on {', '.join(failed)}", file=sys.stderr)
            return 1
        print(f"lab of {len(hosts)} hosts up and converged in {time.monotonic() - started:.1f} s")
        figures = {}
        for n in SIZES:
            subset = list(hosts[:n])
            times, cpu, busy = [], [], []
            for _ in range(REPEATS):
                cpu0, busy0 = time.process_time(), machine_busy_seconds()
                report = check(ls.stack, key, subset)
                cpu.append(time.process_time() - cpu0)
                busy.append(machine_busy_seconds() - busy0)
                if report.exit_code != 0:
                    print(f"{n} hosts: the check did not come back clean ({report.status})", file=sys.stderr)
                    return 1
                times.append(report.seconds)
            figures[n] = statistics.median(times)
            print(f"  {n:>2} hosts: {figures[n]:.2f} s (median of {REPEATS}: {', '.join(f'{t:.2f}' for t in times)}), "
                  f"{figures[n] / n * 1000:.0f} ms per host, checker CPU {statistics.median(cpu):.2f} s, "
                  f"machine CPU {statistics.median(busy):.2f} s = {statistics.median(busy) / n * 1000:.0f} ms per host, "
                  f"cores {statistics.median(busy) / (figures[n] * (os.cpu_count() or 1)):.0%} busy")
    small, large = SIZES[0], SIZES[-1]
    growth = figures[large] / figures[small]
    linear = large / small
    print(f"growth {small} -> {large} hosts: x{growth:.2f} (linear would be x{linear:.0f})")
    if quick:
        return 0
    print(f"target {large} hosts under {TARGET_20:.0f} s: {'met' if figures[large] < TARGET_20 else 'MISSED'}")
    print(f"target growth under x{TARGET_GROWTH:.0f}: {'met' if growth < TARGET_GROWTH else 'MISSED'}")
    # Lab hosts share this machine's cores with the checker: their sshd, sudo and probe run on the
    # same CPUs, so here parallel checks hide waiting, not work. On Proxmox each VM has its own.
    # When the cores are near 100% busy, the wall time is the hosts' summed CPU over the cores, and
    # grows with the host count for that reason alone.
    print(f"(this machine has {os.cpu_count()} cores for the checker and all {max(SIZES)} hosts' sshd, sudo and probe)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
