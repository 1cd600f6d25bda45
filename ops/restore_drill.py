"""Restore drills and restores for people: the target's last drill as a per-host report, and copying a host's latest archive elsewhere.

    python -m ops restore-drill --stack prod --key deploy_ed25519            # report the last drill
    python -m ops restore-drill --stack prod --key deploy_ed25519 --run      # run the drill now, then report
    python -m ops.restore_drill restore --from prod --host loomio --to staging --key deploy_ed25519
        # prod loomio's latest archive unpacked on staging's loomio under /var/lib/hypha-backup/restored/

Everything goes over SSH through each stack's gateway (ops.remote.Session), as the deploy user or
the person given with --user. A restore streams `borg export-tar` from the source stack's target
straight into `tar -x` on the destination host: the data never lands on this machine, and the
repository's passphrase never leaves the target.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import socket
import sys
import time
from typing import Optional

import paramiko

from model import derive_backup as backup_model
from model.load import load_stack
from model.stack import Stack
from render.roles import backup as rb

from .remote import CHANNEL_TIMEOUT, Session

RESTORED_DIR = f"{rb.STATE_DIR}/restored"
DRILL_UNIT = "hypha-borg-drill.service"


SESSION_TRIES = 3


def _session(stack: Stack, host: str, key: str, user: str):
    """A session through the gateway; dialled again (3 times in all) when the host does not answer.

    ops.remote already redials for 30 s; a target busy with a drill under load has been seen to
    refuse for longer, and a report should not fail on that.
    """
    for attempt in range(SESSION_TRIES):
        try:
            return Session(stack, host, user, key)
        except (paramiko.SSHException, socket.error) as exc:
            if isinstance(exc, paramiko.AuthenticationException) or attempt == SESSION_TRIES - 1:
                raise
            time.sleep(5)
    raise AssertionError("unreachable")


def _target(stack: Stack) -> str:
    target = backup_model.target_name(stack)
    if target is None or not backup_model.clients(stack):
        raise SystemExit(f"stack {stack.site.stack!r} has no backup target with clients (the `backup` section)")
    return target


def fetch_status(stack: Stack, key: str, user: str = "deploy", run: bool = False) -> tuple[Optional[dict], str]:
    """(the drill's status JSON or None, what running it printed) from the stack's backup target."""
    target = _target(stack)
    with _session(stack, target, key, user) as s:
        log = ""
        if run:
            # A oneshot unit: `start` returns when the drill is over, failed or not.
            r = s.run(f"sudo -n systemctl start {DRILL_UNIT}; sudo -n journalctl -u {DRILL_UNIT} -n 40 --no-pager -o cat",
                      timeout=3600)
            log = r.stdout + r.stderr
        r = s.run(f"cat {rb.DRILL_STATUS}", timeout=60)
        if r.status != 0:
            return None, log
        return json.loads(r.stdout), log


def _age(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400 * 2:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d"


def _when(ts: Optional[float]) -> str:
    if ts is None:
        return "never"
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def report(stack: Stack, status: Optional[dict], now: Optional[float] = None) -> tuple[str, int]:
    """The drill status as a per-host report, and the exit code (0 all passed, 1 a failure, 2 no drill yet)."""
    now = time.time() if now is None else now
    target = backup_model.target_name(stack)
    if status is None:
        return (f"No restore drill has run on {target} (stack {stack.site.stack}) yet: "
                f"no {rb.DRILL_STATUS}. Run it with --run.\n", 2)
    repos = status.get("repositories", {})
    lines = [
        f"Restore drill on {status.get('host', target)} (stack {stack.site.stack}): "
        f"finished {_when(status.get('finished'))} ({_age(now - status.get('finished', now))} ago), "
        f"took {status.get('seconds', 0):.1f} s",
        "",
        f"  {'host':<12} {'result':<7} {'latest archive':<34} {'canary age':>12} {'restored':>22}  last success",
    ]
    expected = backup_model.clients(stack)
    for name in sorted(set(expected) | set(repos)):
        r = repos.get(name)
        if r is None:
            lines.append(f"  {name:<12} {'MISSING':<7} not in the drill (is the target's config older than this stack's?)")
            continue
        restored = f"{r.get('files', 0)} files, {_size(r.get('bytes', 0))}" if r.get("ok") or r.get("files") else "-"
        lines.append(
            f"  {name:<12} {'ok' if r.get('ok') else 'FAILED':<7} {str(r.get('archive') or '-'):<34} "
            f"{_age(r.get('canary_age_seconds')):>12} {restored:>22}  {_when(r.get('last_success'))}"
        )
        if not r.get("ok"):
            lines.append(f"  {'':<12} {'':<7} {r.get('error')}")
    ok = [n for n in expected if repos.get(n, {}).get("ok")]
    failed = sorted(set(expected) - set(ok))
    lines += ["", f"{len(ok)} of {len(expected)} repositories restored and checked"
              + (f"; FAILED: {', '.join(failed)}" if failed else "")]
    return "\n".join(lines) + "\n", 0 if not failed else 1


# --- restore: a host's latest archive into another host (prod data into staging) ---------------------


def restore(src: Stack, host: str, dst: Stack, dst_host: str, key: str, user: str = "deploy",
            paths: tuple[str, ...] = (), into: Optional[str] = None, dst_key: Optional[str] = None) -> tuple[str, float]:
    """Stream `host`'s latest archive from `src`'s target into `dst_host` of `dst`; returns (directory, seconds).

    Unpacked under RESTORED_DIR/<src stack>-<host>-<time> unless `into` is given (e.g. `/` to put the
    files back in place, with the service stopped).
    """
    if host not in backup_model.clients(src):
        raise SystemExit(f"{host!r} is not a backup client of stack {src.site.stack!r}; clients: {', '.join(backup_model.clients(src))}")
    if dst_host not in dst.hosts:
        raise SystemExit(f"{dst_host!r} is not a host of stack {dst.site.stack!r}")
    target = _target(src)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    where = into or f"{RESTORED_DIR}/{src.site.stack}-{host}-{stamp}"
    export = (f"sudo -n /usr/bin/python3 {rb.TARGET_TOOL} --config {rb.TARGET_CONFIG} export {shlex.quote(host)} "
              + " ".join(shlex.quote(p) for p in paths))
    unpack = (f"sudo -n install -d -m 0700 {shlex.quote(where)} && "
              f"sudo -n tar -x --numeric-owner --same-owner -p -C {shlex.quote(where)} -f -")
    started = time.monotonic()
    with _session(src, target, key, user) as s_src, _session(dst, dst_host, dst_key or key, user) as s_dst:
        _pipe(s_src, export, s_dst, unpack)
    return where, time.monotonic() - started


def _pipe(src, src_cmd: str, dst, dst_cmd: str, timeout: float = 6 * 3600) -> None:
    """src_cmd's stdout into dst_cmd's stdin, chunk by chunk (nothing held in memory or on disk here)."""
    a = src.client.get_transport().open_session(timeout=CHANNEL_TIMEOUT)
    b = dst.client.get_transport().open_session(timeout=CHANNEL_TIMEOUT)
    a.exec_command(src_cmd)
    b.exec_command(dst_cmd)
    a.shutdown_write()
    err_a, err_b = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while True:
        moved = False
        if a.recv_ready():
            b.sendall(a.recv(1 << 16))
            moved = True
        if a.recv_stderr_ready():
            err_a += a.recv_stderr(1 << 16)
            moved = True
        if b.recv_stderr_ready():
            err_b += b.recv_stderr(1 << 16)
            moved = True
        if b.recv_ready():
            b.recv(1 << 16)
            moved = True
        if a.exit_status_ready() and not a.recv_ready() and not a.recv_stderr_ready():
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"restore still streaming after {timeout} s")
        if not moved:
            time.sleep(0.005)
    b.shutdown_write()
    status_a = a.recv_exit_status()
    while not b.exit_status_ready():
        if b.recv_stderr_ready():
            err_b += b.recv_stderr(1 << 16)
        time.sleep(0.01)
    while b.recv_stderr_ready():
        err_b += b.recv_stderr(1 << 16)
    status_b = b.recv_exit_status()
    a.close()
    b.close()
    if status_a != 0:
        raise RuntimeError(f"export on {src.host} exited {status_a}: {err_a.decode(errors='replace')[-1500:]}")
    if status_b != 0:
        raise RuntimeError(f"unpacking on {dst.host} exited {status_b}: {err_b.decode(errors='replace')[-1500:]}")


def main(argv: Optional[list[str]] = None) -> int:

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "restore":
        p = argparse.ArgumentParser(prog="ops.restore_drill restore", description=restore.__doc__.split("\n")[0])
        p.add_argument("--from", dest="src", required=True, help="stack the archive comes from, e.g. prod")
        p.add_argument("--host", required=True, help="the backup client whose latest archive is restored")
        p.add_argument("--to", dest="dst", required=True, help="stack to restore into, e.g. staging")
        p.add_argument("--to-host", help="host in --to (default: the same name as --host)")
        p.add_argument("--path", action="append", default=[], help="only this path of the archive (repeatable)")
        p.add_argument("--into", help=f"directory to unpack into (default {RESTORED_DIR}/<stack>-<host>-<time>)")
        p.add_argument("--key", required=True, help="private key file for --from (and --to unless --to-key)")
        p.add_argument("--to-key", help="private key file for --to, if it differs")
        p.add_argument("--user", default="deploy")
        a = p.parse_args(argv[1:])
        with open(a.key, encoding="utf-8") as fh:
            key = fh.read()
        dst_key = None
        if a.to_key:
            with open(a.to_key, encoding="utf-8") as fh:
                dst_key = fh.read()
        where, seconds = restore(load_stack(a.src), a.host, load_stack(a.dst), a.to_host or a.host, key, a.user,
                                 tuple(a.path), a.into, dst_key)
        print(f"{a.src} {a.host}'s latest archive unpacked on {a.dst} {a.to_host or a.host} in {where} ({seconds:.1f} s)")
        return 0
    p = argparse.ArgumentParser(prog="ops restore-drill", description="The backup target's restore drill, per host.")
    p.add_argument("--stack", required=True)
    p.add_argument("--key", required=True, help="private key file (the deploy key, or yours with --user)")
    p.add_argument("--user", default="deploy")
    p.add_argument("--run", action="store_true", help="run the drill now (takes as long as restoring everything)")
    p.add_argument("--json", action="store_true", help="print the target's status JSON instead")
    a = p.parse_args(argv)
    stack = load_stack(a.stack)
    with open(a.key, encoding="utf-8") as fh:
        key = fh.read()
    status, log = fetch_status(stack, key, a.user, a.run)
    if a.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0 if status and status.get("ok") else (2 if status is None else 1)
    text, code = report(stack, status)
    sys.stdout.write(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
