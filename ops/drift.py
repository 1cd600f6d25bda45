"""Drift check: does every host still hold what render/ says it must? Read-only, all hosts in parallel.

    python -m ops drift --stack prod [--key FILE] [--known-hosts FILE] [--json] [--host NAME ...]

For each host, one SSH session as the deploy user through the gateway (ops.remote.Session, like
the converge) runs one read-only script under `sudo -n` that reports, for every managed file of
the host's plan (render.roles.host_plan): its sha256, mode, owner and group, and the content of
those whose sha256 differs from the desired one (so only those travel, for a unified diff); the
state of every managed unit; paths the plan says must be absent; and every authorized key on the
host: each file in /etc/ssh/authorized_keys and each account's ~/.ssh/authorized_keys(2).

Files holding late values (secrets, generated keys; `ManagedFile.late`) cannot be compared
without those secrets, which this command never has: for them only existence, mode, owner and
group are checked, and the report says so.

The deploy key's private half: `--key FILE`, else the file named by HYPHA_DEPLOY_KEY_FILE, else
the key itself in HYPHA_DEPLOY_KEY (how a CI secret arrives). The pinned host keys: `--known-hosts
FILE`, else as ops.remote.pins_for finds them (HYPHA_KNOWN_HOSTS_FILE, HYPHA_KNOWN_HOSTS, the
stack output `known_hosts`). A host that answers with another key is reported as `host-key`, an
error of its own, and nothing is read from it (nor, if it is the gateway, from any host behind it).

Exit 0 when every host matches, 2 when anything drifted, 1 when a host could not be checked
(the other hosts are still checked and reported) or the command was used wrongly.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import difflib
import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import yaml

from model import derive
from model.errors import ConfigError
from model.load import build_stack, load_stack
from model.stack import Stack
from render.plan import HostPlan
from render.roles import host_plan
from render.roles.base import AUTHORIZED_KEYS_DIR

from .remote import CONNECT_TIMEOUT, HostKeyError, Pins, Session, _pkey, pins_for

KEY_FILE_ENV = "HYPHA_DEPLOY_KEY_FILE"
KEY_ENV = "HYPHA_DEPLOY_KEY"
HOST_TIMEOUT = 60.0
CLEAN, DRIFT, ERROR = 0, 2, 1

# One fork per kind of question, not per file: on a 2-core node the hosts' own work dominates the
# check's time once hosts are checked in parallel. ROOT is empty on a host; the offline tests
# point it at a directory standing in for `/`. Paths below are relative to it.
_PROBE_HEAD = r"""set -u
export LC_ALL=C
cd "$ROOT/" || exit 1
key_file() { # tag path-relative-to-root
	[ -f "$2" ] || return 0
	p=${2#.}
	printf '%s %s /%s\n' "$1" "$(base64 -w0 -- "$2")" "${p#/}"
}
"""
_PROBE_TAIL = r"""for f in etc/ssh/authorized_keys/* etc/ssh/authorized_keys/.[!.]*; do key_file K "$f"; done
getent passwd | cut -d: -f6 | sort -u | while IFS= read -r home; do
	[ -n "$home" ] || continue
	key_file H ".$home/.ssh/authorized_keys"
	key_file H ".$home/.ssh/authorized_keys2"
done
echo END
"""


@dataclass
class Finding:
    kind: str
    """file-changed, file-missing, file-metadata, unit-inactive, should-be-absent, unmanaged-key."""
    path: str
    detail: str
    diff: str = ""


@dataclass
class HostReport:
    host: str
    status: str = "clean"
    """clean, drift, error, or host-key (it did not answer with its pinned key: nothing was read)."""
    error: str = ""
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked_files: int = 0
    seconds: float = 0.0


@dataclass
class Report:
    stack: str
    hosts: dict[str, HostReport]
    seconds: float

    @property
    def exit_code(self) -> int:
        states = {h.status for h in self.hosts.values()}
        return ERROR if states & {"error", "host-key"} else DRIFT if "drift" in states else CLEAN

    @property
    def status(self) -> str:
        return {CLEAN: "clean", DRIFT: "drift", ERROR: "error"}[self.exit_code]

    def as_dict(self) -> dict:
        return {
            "stack": self.stack,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "hosts": {name: asdict(h) for name, h in sorted(self.hosts.items())},
        }


def probe_script(plan: HostPlan, root: str = "") -> str:
    """The read-only script a host runs for its plan.

    It prints `M mode owner group path` for every managed file present, `C base64 path` for each
    whose sha256 is not the rendered file's (files with late values are left out of that), `A path`
    for paths that must be absent but exist, `U` blocks of unit state, `K`/`H` lines with the key
    files in /etc/ssh/authorized_keys and in home directories, then `END`.
    """
    rel = [shlex.quote(f.path.lstrip("/")) for f in plan.files]
    sums = [f"{hashlib.sha256(f.content.encode()).hexdigest()}  {f.path.lstrip('/')}" for f in plan.files if not f.late]
    lines = [f"ROOT={shlex.quote(root)}", _PROBE_HEAD]
    if rel:
        lines.append(f"stat -c 'M %a %U %G /%n' -- {' '.join(rel)} 2>/dev/null")
    if sums:
        lines += [
            # The heredoc's body starts on the next line, so the whole pipeline stays on this one.
            "sha256sum -c --quiet 2>/dev/null <<'HYPHA_SUMS' | sed -n 's/: FAILED$//p' | while IFS= read -r p; do "
            "printf 'C %s /%s\\n' \"$(base64 -w0 -- \"$p\")\" \"$p\"; done",
            *sums,
            "HYPHA_SUMS",
        ]
    absent = [shlex.quote(path.lstrip("/")) for path, _unit in plan.absent]
    if absent:
        lines.append("# shellcheck disable=SC2043 # often a single path")
        lines.append(f'for p in {" ".join(absent)}; do if [ -e "$p" ] || [ -L "$p" ]; then echo "A /$p"; fi; done')
    units = list(dict.fromkeys(plan.units))
    if units:
        # One block per unit, in argument order, blank-line separated.
        lines.append(
            f"systemctl show -p ActiveState -p ConditionResult {' '.join(shlex.quote(u) for u in units)} 2>/dev/null"
            " | sed 's/^/U /'"
        )
    lines.append(_PROBE_TAIL)
    return "\n".join(lines)


def _decode(b64: str) -> str:
    return base64.b64decode(b64).decode("utf-8", "replace")


def compare(plan: HostPlan, output: str) -> HostReport:
    """Findings from a host's probe output against its plan. Pure: the tests feed it output directly."""
    report = HostReport(plan.host)
    if not output.rstrip().endswith("END"):
        report.status, report.error = "error", "the check script stopped before its end (no END line)"
        return report
    files = {f.path: f for f in plan.files}
    live_meta: dict[str, tuple[str, str, str]] = {}
    contents: dict[str, str] = {}
    key_files: dict[str, str] = {}
    home_keys: dict[str, str] = {}
    unit_blocks: list[dict[str, str]] = [{}]
    for line in output.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "M":
            mode, owner, group, path = rest.split(" ", 3)
            live_meta[path] = (mode, owner, group)
        elif tag == "C":
            b64, path = rest.split(" ", 1)
            contents[path] = _decode(b64)
        elif tag == "A":
            report.findings.append(Finding("should-be-absent", rest, "present, but the plan says it must not exist"))
        elif tag == "U":
            if not rest.strip():
                unit_blocks.append({})
            else:
                key, _, value = rest.partition("=")
                unit_blocks[-1][key] = value
        elif tag == "K":
            b64, path = rest.split(" ", 1)
            key_files[path] = _decode(b64)
        elif tag == "H":
            b64, path = rest.split(" ", 1)
            home_keys[path] = _decode(b64)
    units = list(dict.fromkeys(plan.units))
    blocks = [b for b in unit_blocks if b]
    for i, unit in enumerate(units):
        props = blocks[i] if i < len(blocks) else {}
        state = props.get("ActiveState", "unknown")
        if state == "active":
            continue
        if props.get("ConditionResult") == "no":
            # systemd skipped it on purpose (e.g. timesyncd in a container): not drift, but said.
            report.notes.append(f"{unit}: {state}, its start condition does not hold on this host")
        else:
            report.findings.append(Finding("unit-inactive", unit, f"is {state}, not active"))
    for path, f in files.items():
        report.checked_files += 1
        if path not in live_meta:
            report.findings.append(Finding("file-missing", path, "managed file is missing"))
            continue
        mode, owner, group = live_meta[path]
        want_meta = (f.mode.lstrip("0") or "0", f.owner, f.group)
        if (mode, owner, group) != want_meta:
            report.findings.append(
                Finding("file-metadata", path, f"is {mode} {owner}:{group}, should be {want_meta[0]} {f.owner}:{f.group}")
            )
        if f.late:
            report.notes.append(f"{path}: holds late values ({', '.join(f.late)}); content not compared without secrets")
            continue
        if path in contents and not int(f.mode, 8) & 0o004:
            # Not world-readable on the host: its lines stay out of the report (and CI logs).
            report.findings.append(Finding("file-changed", path, f"content differs from the rendered file (mode {f.mode}: diff not shown)"))
        elif path in contents:
            live = contents[path]
            diff = "".join(
                difflib.unified_diff(
                    f.content.splitlines(keepends=True), live.splitlines(keepends=True),
                    fromfile=f"{path} (desired)", tofile=f"{path} (on {plan.host})",
                )
            )
            report.findings.append(Finding("file-changed", path, "content differs from the rendered file", diff))
    # Unmanaged access: key files nobody declared, lines added to declared ones, keys in home dirs.
    for path, text in sorted(key_files.items()):
        declared = files.get(path)
        if declared is None:
            keys = _key_lines(text)
            report.findings.append(
                Finding("unmanaged-key", path, f"key file not in the plan ({len(keys)} key(s): {_summary(keys)})")
            )
        else:
            extra = [k for k in _key_lines(text) if k not in _key_lines(declared.content)]
            if extra:
                report.findings.append(Finding("unmanaged-key", path, f"{len(extra)} undeclared key line(s): {_summary(extra)}"))
    for path, text in sorted(home_keys.items()):
        keys = _key_lines(text)
        if keys:
            report.findings.append(
                Finding("unmanaged-key", path, f"{len(keys)} key(s) in a home directory ({_summary(keys)}); "
                        f"sshd reads only {AUTHORIZED_KEYS_DIR}%u, but nobody declared these")
            )
    if report.findings:
        report.status = "drift"
    return report


def _key_lines(text: str) -> list[str]:
    return [x.strip() for x in text.splitlines() if x.strip() and not x.strip().startswith("#")]


def _summary(keys: list[str]) -> str:
    """Key comments (or types), never whole keys: the report goes to CI logs."""
    out = []
    for k in keys[:5]:
        parts = k.split()
        i = next((n for n, p in enumerate(parts) if p.startswith(("ssh-", "ecdsa-", "sk-"))), None)
        out.append(" ".join(parts[i + 2:]) or parts[i] if i is not None and len(parts) > i + 1 else "unparsable line")
    return ", ".join(out) + (", …" if len(keys) > 5 else "")


class _Through(Session):
    """A session to a LAN host over the already open gateway connection.

    One jump for every host: 20 hosts dialling the gateway at once would trip sshd's MaxStartups
    (10 unauthenticated connections, then random drops) and pay 20 more handshakes.
    """

    def __init__(self, stack: Stack, host: str, user: str, private_key: str, jump: Session, timeout: float = CONNECT_TIMEOUT):
        self.host = host
        self.pins = jump.pins
        self._clients = []
        self.client = self._through(jump.client, stack, host, user, _pkey(private_key), timeout)


def check_host(stack: Stack, host: str, private_key: str, gateway: Optional[Session] = None,
               timeout: float = HOST_TIMEOUT, pins: Optional[Pins] = None) -> HostReport:
    """One host's report; `gateway` is an open session to the gateway to jump through (else one is dialled)."""
    started = time.monotonic()
    plan = host_plan(stack, host)
    try:
        if gateway is not None and host == derive.gateway_name(stack):
            result = gateway.run("sudo -n sh -s", stdin=probe_script(plan), timeout=timeout)
        else:
            session = (
                _Through(stack, host, derive.DEPLOY_USER, private_key, gateway)
                if gateway is not None
                else Session(stack, host, derive.DEPLOY_USER, private_key, pins=pins)
            )
            with session:
                result = session.run("sudo -n sh -s", stdin=probe_script(plan), timeout=timeout)
    except HostKeyError as exc:  # refused at the handshake, before the probe was sent
        report = HostReport(host, status="host-key", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure is this host's error, never the others'
        report = HostReport(host, status="error", error=_explain(stack, host, exc))
    else:
        if result.status != 0:
            report = HostReport(host, status="error", error=f"check script exited {result.status}: {result.stderr.strip()[-300:]}")
        else:
            report = compare(plan, result.stdout)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _explain(stack: Stack, host: str, exc: Exception) -> str:
    gw = derive.gateway_name(stack)
    where = derive.gateway_address(stack) if host == gw else f"{stack.hosts[host].lan_ip} through the gateway {derive.gateway_address(stack)}"
    kind = type(exc).__name__
    return f"unreachable: could not reach {host} at {where} ({kind}: {exc or 'no detail'})"


def check(stack: Stack, private_key: str, hosts: Optional[list[str]] = None, workers: int = 32,
          pins: Optional[Pins] = None) -> Report:
    """Every host (or those named) checked in parallel; one host's failure never stops another's check."""
    started = time.monotonic()
    names = sorted(hosts or stack.hosts)
    gw = derive.gateway_name(stack)
    try:
        gateway = Session(stack, gw, derive.DEPLOY_USER, private_key, pins=pins)
    except HostKeyError as exc:  # the way in is not the bastion we pinned: nothing goes through it
        reports = {n: HostReport(n, status="host-key", error=str(exc)) if n == gw else
                   HostReport(n, status="error", error=f"not checked: the gateway failed its host key check ({exc})")
                   for n in names}
        return Report(stack.site.stack, reports, time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - without the gateway no host can be reached
        why = _explain(stack, gw, exc)
        reports = {n: HostReport(n, status="error", error=why if n == gw else f"unreachable: no way in, the gateway is down ({why})") for n in names}
        return Report(stack.site.stack, reports, time.monotonic() - started)
    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, min(workers, len(names)))) as pool:
            reports = dict(zip(names, pool.map(lambda h: check_host(stack, h, private_key, gateway), names)))
    finally:
        gateway.close()
    return Report(stack.site.stack, reports, time.monotonic() - started)


def format_report(report: Report) -> str:
    lines = [f"Drift check of stack {report.stack}: {report.status} ({len(report.hosts)} hosts, {report.seconds:.2f} s)"]
    for name, h in sorted(report.hosts.items()):
        lines.append(f"  {name:<12} {h.status:<6} {h.checked_files} files, {h.seconds:.2f} s")
        if h.error:
            lines.append(f"      {'HOST KEY' if h.status == 'host-key' else 'ERROR'}: {h.error}")
        for f in h.findings:
            lines.append(f"      {f.kind}: {f.path}: {f.detail}")
            lines += [f"        {d}" for d in f.diff.rstrip("\n").splitlines()]
        for note in h.notes:
            lines.append(f"      note: {note}")
    return "\n".join(lines)


def read_key(path: Optional[str]) -> str:
    path = path or os.environ.get(KEY_FILE_ENV)
    if path:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    raise ValueError(f"no deploy key: pass --key FILE, or set {KEY_FILE_ENV} to a file or {KEY_ENV} to the key itself")


def main(argv: Optional[list[str]] = None) -> int:

    parser = argparse.ArgumentParser(prog="ops drift", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", required=True, help="stack name: Pulumi.<stack>.yaml")
    parser.add_argument("--key", help=f"the deploy key's private half (default: ${KEY_FILE_ENV}, or ${KEY_ENV} itself)")
    parser.add_argument("--known-hosts", help="the pinned host keys, known_hosts lines (default: $HYPHA_KNOWN_HOSTS_FILE, "
                                              "$HYPHA_KNOWN_HOSTS, else `pulumi stack output known_hosts`)")
    parser.add_argument("--host", action="append", help="check only this host (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--stack-file", help="read the stack config from this YAML file instead (labs)")
    args = parser.parse_args(argv)
    try:
        if args.stack_file:
            with open(args.stack_file, encoding="utf-8") as fh:
                stack = build_stack(yaml.safe_load(fh), args.stack)
        else:
            stack = load_stack(args.stack)
        key = read_key(args.key)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"ops drift: {exc}", file=sys.stderr)
        return ERROR
    unknown = sorted(set(args.host or []) - set(stack.hosts))
    if unknown:
        print(f"ops drift: --host {', '.join(unknown)}: not a host of stack {args.stack}", file=sys.stderr)
        return ERROR
    try:
        pins = pins_for(args.stack, args.known_hosts)
    except (ValueError, OSError) as exc:
        print(f"ops drift: {exc}", file=sys.stderr)
        return ERROR
    report = check(stack, key, args.host, pins=pins)
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    for name, h in sorted(report.hosts.items()):
        if h.error:
            print(f"ops drift: {name}: {h.error}", file=sys.stderr)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
