"""`python -m lab`: bring a demo lab up (and converge it as a stack would), clean up after a crash, see what runs.

    python -m lab up [--prefix demo] [--seconds 600] [--stack staging]   # gateway + 2 hosts (`make lab`)
    python -m lab down --prefix demo                                     # remove a lab left over from a crash
    python -m lab status                                                 # every lab of lab/subnets.py: ranges, what is up
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Optional, Sequence

from .hosts import Lab, available, layout, netns_list, sweep
from .subnets import LABS, subnets


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _converge_demo(lab: Lab, stack_name: str, others: Sequence[str], vpn) -> None:
    """Converge the demo lab as `stack_name` would and print how people log in."""
    # Lazy: lab.stack loads paramiko and cryptography (ops.remote; 1.3-1.6 s more than lab.hosts here,
    # measured), which `down`, `status` and a bare `up` do not need.
    from .stack import boot_and_converge, lab_stack

    ls = lab_stack(stack_name, hosts=("gw", *others), front=lab.front, lan=lab.lan, vpn=vpn)
    for host, result in boot_and_converge(lab, ls).items():
        print(f"converged {host}: {'ok' if result.ok else 'FAILED'} in {result.seconds:.1f} s")
        if not result.ok:
            print(result.stdout + result.stderr)
    keys = lab.dir / "keys"
    keys.mkdir(exist_ok=True)
    gw = ls.front_ip["gw"]
    for person, pair in ls.keys.items():
        pair.write(keys / person)
    # The hosts' pinned keys, as members get them from the stack output `known_hosts`.
    known = keys / "known_hosts"
    known.write_text(ls.known_hosts())
    pinned = f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known}"
    print(f"keys and known_hosts in {keys}; for example, as an admin through the bastion:")
    for host in others:
        lan_ip = ls.stack.hosts[host].lan_ip
        hop = f"ssh -i {keys}/alice {pinned} -W %h:%p alice@{gw}"
        print(f"  ssh -i {keys}/alice {pinned} -o ProxyCommand='{hop}' alice@{lan_ip}   # {host}")


def _status() -> str:
    """One line per lab of the table: its ranges, who uses it, and its namespaces on this machine now."""
    namespaces = netns_list()
    lines = []
    for prefix, lab in LABS.items():
        mine = [ns for ns in namespaces if ns.startswith(prefix + "-")]
        state = f"up ({len(mine)} namespaces)" if mine else "-"
        ranges = " ".join(str(n) for n in lab.nets)
        lines.append(f"{prefix:<8} {state:<18} {ranges:<48} {lab.used_by}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="bring up a demo lab (gateway + 2 hosts) until Ctrl-C or --seconds")
    up.add_argument("--prefix", default="demo")
    up.add_argument("--front", help="front range (default: the prefix's in lab/subnets.py, else the demo's)")
    up.add_argument("--lan", help="LAN range (default: the prefix's in lab/subnets.py, else the demo's)")
    up.add_argument("--hosts", default="h1,h2", help="LAN hosts besides the gateway `gw` (comma-separated)")
    up.add_argument("--seconds", type=float, default=3600.0, help="tear down after this long (at most a day)")
    up.add_argument("--stack", choices=("prod", "staging"),
                    help="also give every host its first boot and converge it as this stack would (lab.stack)")
    down = sub.add_parser("down", help="remove what a lab with this prefix left behind")
    down.add_argument("--prefix", required=True)
    sub.add_parser("status", help="every lab of lab/subnets.py: its ranges and whether it is up here")
    args = parser.parse_args(argv)

    if args.cmd == "status":
        print(_status())
        return 0
    ok, why = available()
    if not ok:
        print(f"the lab cannot run here: {why}", file=sys.stderr)
        return 2
    if args.cmd == "down":
        removed = sweep(args.prefix)
        print("\n".join(removed) if removed else f"nothing left of lab {args.prefix}")
        return 0
    ranges = LABS.get(args.prefix) or subnets("demo")
    front, lan = args.front or str(ranges.front), args.lan or str(ranges.lan)
    vpn = ranges.vpn if len(ranges.nets) > 2 else subnets("demo").vpn
    seconds = max(0.0, min(args.seconds, 86400.0))
    others = [h for h in args.hosts.split(",") if h]
    lab = Lab(args.prefix, layout(others=others, front=front, lan=lan), front=front, lan=lan)
    # SIGTERM tears down like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started in the background, where SIGINT is ignored
    try:
        lab.up()
        print(lab.describe())
        if args.stack:
            _converge_demo(lab, args.stack, others, vpn)
        print(f"up in {lab.timings['up']:.1f} s; tearing down after {seconds:.0f} s or on Ctrl-C", flush=True)
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass
    finally:
        lab.down()
        print(f"down in {lab.timings.get('down', 0):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
