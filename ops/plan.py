"""Offline plan: run the program for one stack under mocks and print what it would build.

    python -m ops.plan --stack prod [--json]

Exit codes (EXIT below; README, "Offline plan"): 0 the plan is fine, 1 the config is invalid,
2 a node is over capacity (the config is otherwise valid), 3 a policy whose level is mandatory
(policy/config.<stack>.json) is violated, 4 a bug in this program (never a config problem).
With `--json` a failure prints a JSON document too: {"stack", "status", "exit_code", "problems"|"error"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections import Counter, defaultdict
from typing import Any

from model import derive, retire
from model.capacity import usage
from model.errors import ConfigError
from model.load import build_stack, read_stack_config
from render import hostkeys
from components.host_keys import key_resource_name

from .mockrun import Run, run_stack
from .policy_check import evaluate

EXIT = {"ok": 0, "invalid_config": 1, "over_capacity": 2, "mandatory_policy": 3, "bug": 4}
MEANING = {
    0: "the plan is fine",
    1: "the config is invalid",
    2: "a node is over capacity",
    3: "a mandatory policy is violated",
    4: "a bug in hypha-infra, not in the config",
}


def _top_level(run: Run) -> dict[str, Counter]:
    """Resources under each top-level component (or a top-level resource on its own), by type."""
    by_urn = run.by_urn()
    groups: dict[str, Counter] = defaultdict(Counter)
    for r in run.resources:
        top = r
        while top.parent in by_urn:
            top = by_urn[top.parent]
        kind = "provider" if top.type.startswith("pulumi:providers:") else top.type.rsplit(":", 1)[-1]
        label = f"{kind} {top.name}"
        if r is top and not r.custom:
            groups[label]  # a component: listed, counted through its children
        else:
            groups[label][r.type.rsplit(":", 1)[-1]] += 1
    return groups


def build_report(stack_name: str, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plan of `stack_name` from its stack files (or from `raw`, a config already read)."""
    started = time.perf_counter()
    # Read the stack files once: the model for the report, the same raw config for the program run.
    raw = read_stack_config(stack_name) if raw is None else raw
    stack = build_stack(raw, stack_name)
    run = run_stack(stack_name, raw=raw)
    # The policy pack's verdicts on this very run, as `pulumi preview --policy-pack policy` gives them.

    policies = evaluate(run, raw).as_dict()
    nodes = {}
    over = False
    for node, u in usage(stack.proxmox, stack.hosts).items():
        nodes[node] = {}
        for key, item in u.items():
            nodes[node][key] = {"used": item.used, "offered": item.offered, "percent": round(100 * item.ratio, 1), "level": item.level}
            over |= item.level == "over"
    report = {
        "stack": stack_name,
        "domain": stack.site.domain,
        "resources": len(run.resources),
        "components": {k: dict(v) for k, v in sorted(_top_level(run).items())},
        "hosts": {
            name: {
                "vm_id": h.vm_id,
                "node": h.node,
                "cores": h.cores,
                "memory_mb": h.memory_mb,
                "disk_gb": h.disk_gb,
                "lan_ip": str(h.lan_ip),
                "public_ipv4": str(h.public_ipv4) if h.public_ipv4 else None,
                "roles": list(h.roles),
                "protected": derive.protected(stack, name),
            }
            for name, h in sorted(stack.hosts.items())
        },
        "nodes": nodes,
        "endpoints": derive.public_endpoints(stack),
        "retired": retire.summary(stack),
        "ssh_logins": derive.login_people(stack),
        "ssh_jump": run.exports.get("ssh_jump"),
        "known_hosts": _known_hosts(stack),
        "over_capacity": over,
        "policies": policies,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return report


def _known_hosts(stack) -> dict[str, Any]:
    """Which known_hosts line each host gets. Not the keys: under mocks they are stand-ins, the real
    ones are made by `pulumi up` (components/host_keys.py), so the plan names where to read them."""

    return {
        "output": "known_hosts",
        "read": "pulumi stack output known_hosts >> ~/.ssh/known_hosts",
        "hosts": {
            name: {
                "addresses": hostkeys.addresses(stack, name),
                "key_type": f"ssh-{hostkeys.PIN_TYPE}",
                "key_resource": key_resource_name(name, hostkeys.PIN_TYPE, h.ssh_host_key_generation),
                "generation": h.ssh_host_key_generation,
            }
            for name, h in sorted(stack.hosts.items())
        },
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [f"Stack {r['stack']} ({r['domain']}): {r['resources']} resources, planned offline in {r['seconds']} s", ""]
    lines.append("Resources per component")
    for comp, counts in r["components"].items():
        inner = ", ".join(f"{n} {t}" for t, n in sorted(counts.items()) if n)
        lines.append(f"  {comp:<28} {inner or '1 resource'}")
    lines += ["", "Hosts"]
    lines.append(f"  {'name':<10} {'vm id':>6} {'node':<6} {'cores':>5} {'MiB':>6} {'GiB':>5}  {'lan':<12} {'public':<15} roles")
    for name, h in r["hosts"].items():
        flag = " [protected]" if h["protected"] else ""
        lines.append(
            f"  {name:<10} {h['vm_id']:>6} {h['node']:<6} {h['cores']:>5} {h['memory_mb']:>6} {h['disk_gb']:>5}  "
            f"{h['lan_ip']:<12} {h['public_ipv4'] or '-':<15} {','.join(h['roles']) or '-'}{flag}"
        )
    lines += ["", "Node capacity (warn above 85%, fail above 100%)"]
    for node, items in r["nodes"].items():
        for key, u in items.items():
            mark = {"ok": "", "warn": "  WARN", "over": "  OVER CAPACITY"}[u["level"]]
            lines.append(f"  {node:<6} {key:<20} {u['used']:>7} / {u['offered']:<7} {u['percent']:>6}%{mark}")
    lines += ["", "Public endpoints"]
    for e in r["endpoints"] or [{"url": "(none)", "ipv4": None, "upstream": ""}]:
        lines.append(f"  {e['url']:<36} {e.get('ipv4') or 'VPN only':<15} -> {e['upstream']}")
    if r.get("retired"):
        lines += ["", "Retired services (names still served and in the zone; no upstream, probe or alerts)"]
        for s in r["retired"]:
            answer = f"{s['status']} -> {s['redirect']}" if s["redirect"] else f"{s['status']} gone"
            where = (f"host {s['host']} removed" if s["host_removed"] else
                     f"its host {s['host']} still backed up" if s["backed_up"] else f"on host {s['host']}")
            lines.append(f"  {s['service']:<14} since {s['date']}  {answer:<40} {where}")
    lines += ["", f"SSH logins: {', '.join(r['ssh_logins'])}", f"Jump: {r['ssh_jump']}"]
    kh = r["known_hosts"]
    lines += ["", f"Host keys: made at `pulumi up`; pin them before the first jump: {kh['read']}"]
    for name, h in kh["hosts"].items():
        rotating = f"  (rotation to generation {h['generation']})" if h["generation"] else ""
        lines.append(f"  {name:<10} {','.join(h['addresses']):<40} {h['key_type']}  {h['key_resource']}{rotating}")
    lines += ["", "Policies (policy/, levels from policy/config.<stack>.json)"]
    for p in r["policies"]["policies"]:
        lines.append(f"  {p['policy']:<40} {p['level']:<10} {p['status']}")
        lines += [f"      {p['level'].upper()}: {v['message']}" for v in p["violations"]]
    if not r["policies"]["passed"]:
        lines.append("  FAILED: a mandatory policy is violated")
    return "\n".join(lines)


def _failure(args, status: str, text: str, detail: dict[str, Any]) -> int:
    print(text, file=sys.stderr)
    if args.json:
        print(json.dumps({"stack": args.stack, "status": status, "exit_code": EXIT[status], **detail}, indent=2))
    return EXIT[status]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ops.plan", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", required=True, help="stack name: a Pulumi.<stack>.yaml must exist")
    parser.add_argument("--json", action="store_true", help="print the report (or the failure) as JSON")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.stack)
    except ConfigError as exc:
        status = "over_capacity" if exc.over_capacity else "invalid_config"
        problems = [{"path": p.path, "message": p.message, "kind": p.kind} for p in exc.problems]
        return _failure(args, status, str(exc), {"problems": problems})
    except Exception as exc:  # noqa: BLE001 - anything but a config error is a bug, and says so
        traceback.print_exc()
        line = (
            f"ops.plan: internal error ({type(exc).__name__}): a bug in hypha-infra, not in the config of "
            f"stack {args.stack!r}; exit {EXIT['bug']}. Please report it with the traceback above."
        )
        return _failure(args, "bug", line, {"error": f"{type(exc).__name__}: {exc}"[:500]})
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if report["over_capacity"]:
        return EXIT["over_capacity"]
    return EXIT["mandatory_policy"] if not report["policies"]["passed"] else EXIT["ok"]


if __name__ == "__main__":
    sys.exit(main())
