"""SSH to catalog hosts the way HostBootstrap does: as a user, through the gateway, one session per host.

    python -m ops.remote converge --stack staging --host bw1 --key ~/.ssh/deploy_ed25519 [--known-hosts FILE]

Used by people (a manual converge), by the lab tests and by the benchmarks.

Every host must answer with its pinned host key (the stack output `known_hosts`, components/
host_keys.py), on both legs, before anything is sent to it: a host with another key, or with
none pinned, is refused with HostKeyMismatch / HostKeyUnknown naming the host and what to do.
The pins: `--known-hosts FILE`, else the file named by HYPHA_KNOWN_HOSTS_FILE, else the lines in
HYPHA_KNOWN_HOSTS, else `pulumi stack output known_hosts` of the stack; library callers (the lab)
pass a Pins or add theirs to PINS.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional

import paramiko
import yaml

from render.converge import converge_script, fill, late_names
from model import derive
from model.stack import Stack
from model.load import build_stack, load_stack

CONNECT_TIMEOUT = 10.0
# Opening a channel on a live connection. sshd serves no channel of a new login until PAM's session
# is open, and pam_systemd's CreateSession call to logind waits for the user's manager
# (user@UID.service) to start, bounded at two minutes (systemd src/login/pam_systemd.c,
# LOGIN_SLOW_BUS_CALL_TIMEOUT_USEC). Quick on a quiet host; with several labs sharing two cores,
# over 30 s in full test runs ("Timeout opening channel" on the jump and on the session). So the
# bound is pam_systemd's, plus a margin: a host that answers at all answers within it.
# tests/test_drift_lab.py pauses a host's logind for 35 s: the login waits, then runs (at 30 s it
# failed with CI's "Timeout opening channel").
CHANNEL_TIMEOUT = 150.0
# Like the Pulumi command provider's dial_error_limit: a host whose sshd is (re)starting (first
# boot, a converge that restarted it) drops the connection; dial again for a while.
DIAL_RETRY_SECONDS = 30.0


KNOWN_HOSTS_FILE_ENV = "HYPHA_KNOWN_HOSTS_FILE"
KNOWN_HOSTS_ENV = "HYPHA_KNOWN_HOSTS"
KNOWN_HOSTS_OUTPUT = "known_hosts"
"""The stack output with every host's pinned key (__main__.py)."""


def fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:…` as ssh-keygen -l and OpenSSH's own warnings print it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class HostKeyError(Exception):
    """A host that did not prove it is the one we pinned; nothing was sent to it."""

    def __init__(self, host: str, address: str, message: str):
        super().__init__(f"{host} ({address}): {message}")
        self.host, self.address = host, address


class HostKeyMismatch(HostKeyError):
    def __init__(self, host: str, address: str, got: paramiko.PKey, want: paramiko.PKey):
        super().__init__(
            host, address,
            f"host key mismatch: it answered with {got.get_name()} {fingerprint(got)}, but its pinned key is "
            f"{want.get_name()} {fingerprint(want)}. Nothing was sent to it. Someone may be between you and the "
            "host: do not go on until you know why. If its key was rotated or its VM rebuilt, take the current "
            f"pins from `pulumi stack output {KNOWN_HOSTS_OUTPUT}` (README, Host keys).",
        )
        self.got, self.want = got, want


class HostKeyUnknown(HostKeyError):
    def __init__(self, host: str, address: str, source: str):
        super().__init__(
            host, address,
            f"no pinned host key for this address in {source}; refusing to trust whatever answers. Pass the "
            f"stack's pins: `pulumi stack output {KNOWN_HOSTS_OUTPUT} > FILE`, then --known-hosts FILE "
            f"(or ${KNOWN_HOSTS_FILE_ENV}=FILE).",
        )


class Pins:
    """Pinned host keys by address, from known_hosts lines (the stack output's format)."""

    def __init__(self, text: str = "", source: str = "the pinned host keys"):
        self.source = source
        self.keys = paramiko.HostKeys()
        self.add(text)

    def add(self, text: str) -> "Pins":
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, n)
            if entry is None:
                raise ValueError(f"{self.source}, line {n}: not a known_hosts line: {line[:60]!r}")
            for name in entry.hostnames:
                self.keys.add(name, entry.key.get_name(), entry.key)
        return self

    @classmethod
    def from_file(cls, path: str) -> "Pins":
        with open(path, encoding="utf-8") as fh:
            return cls(fh.read(), source=path)

    def lookup(self, address: str) -> Optional[paramiko.PKey]:
        found = self.keys.lookup(address)
        return next(iter(found.values())) if found else None

    def __bool__(self) -> bool:
        return len(self.keys) > 0


PINS = Pins(source="this process's pins (ops.remote.PINS)")
"""What a Session trusts when given no Pins: the lab adds its hosts' keys here."""
LATE: dict[str, str] = {}
"""Late values `converge` may fill into a script that still has placeholders: the lab's stand-ins
for what components/late.py makes (only `pulumi up` has the real ones)."""


def pins_for(stack_name: str, path: Optional[str] = None) -> Pins:
    """The pins a command line run uses (see the module docstring for the order)."""
    path = path or os.environ.get(KNOWN_HOSTS_FILE_ENV)
    if path:
        return Pins.from_file(path)
    if os.environ.get(KNOWN_HOSTS_ENV):
        return Pins(os.environ[KNOWN_HOSTS_ENV], source=f"${KNOWN_HOSTS_ENV}")
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise ValueError(f"no pinned host keys: pass --known-hosts FILE (from `pulumi stack output {KNOWN_HOSTS_OUTPUT}`), "
                         f"or set ${KNOWN_HOSTS_FILE_ENV}")
    out = subprocess.run([pulumi, "stack", "output", "--stack", stack_name, KNOWN_HOSTS_OUTPUT],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0 or not out.stdout.strip():
        raise ValueError(f"no pinned host keys: `pulumi stack output --stack {stack_name} {KNOWN_HOSTS_OUTPUT}` "
                         f"failed ({out.stderr.strip()[-200:] or 'empty'}); pass --known-hosts FILE")
    return Pins(out.stdout, source=f"stack {stack_name}'s output {KNOWN_HOSTS_OUTPUT}")


class _Refuse(paramiko.MissingHostKeyPolicy):
    """The host offered no key of the pinned type (paramiko asks for the pinned type first)."""

    def __init__(self, host: str, address: str, want: paramiko.PKey):
        self.host, self.address, self.want = host, address, want

    def missing_host_key(self, client, hostname, key):
        raise HostKeyMismatch(self.host, self.address, key, self.want)


def _transient(exc: Exception) -> bool:
    """A dropped or refused connection, not a refused login."""
    if isinstance(exc, (socket.error, EOFError)):
        return True
    text = str(exc)
    return isinstance(exc, paramiko.SSHException) and any(
        word in text for word in ("EOF", "banner", "reset", "Timeout opening channel")
    )


@dataclass
class Result:
    host: str
    status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == 0


def _pkey(private_key: str) -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key(io.StringIO(private_key)) if "OPENSSH" in private_key else (
        paramiko.RSAKey.from_private_key(io.StringIO(private_key))
    )


class Session:
    """An SSH connection to one host, jumped through the gateway unless it is the gateway."""

    def __init__(self, stack: Stack, host: str, user: str, private_key: str, timeout: float = CONNECT_TIMEOUT,
                 pins: Optional[Pins] = None):
        self.host = host
        self.pins = pins if pins is not None else PINS
        self._clients: list[paramiko.SSHClient] = []
        key = _pkey(private_key)
        gw_addr = derive.gateway_address(stack)
        gw = derive.gateway_name(stack)
        if host == gw:
            self.client = self._dial(lambda: self._connect(gw_addr, user, key, timeout, label=gw))
        else:
            jump = self._dial(lambda: self._connect(gw_addr, user, key, timeout, label=gw))
            self.client = self._through(jump, stack, host, user, key, timeout)

    def _through(self, jump: paramiko.SSHClient, stack: Stack, host: str, user: str, key: paramiko.PKey,
                 timeout: float) -> paramiko.SSHClient:
        """A connection to a LAN host over a direct-tcpip channel of the gateway's connection `jump`."""
        target = (str(stack.hosts[host].lan_ip), 22)

        def through_jump() -> paramiko.SSHClient:
            # A jump channel is a channel on a live connection too (CHANNEL_TIMEOUT, not the dial's).
            channel = jump.get_transport().open_channel("direct-tcpip", target, ("127.0.0.1", 0),
                                                        timeout=max(timeout, CHANNEL_TIMEOUT))
            return self._connect(target[0], user, key, timeout, sock=channel, label=host)

        return self._dial(through_jump)

    def _dial(self, connect) -> paramiko.SSHClient:
        deadline = time.monotonic() + DIAL_RETRY_SECONDS
        while True:
            try:
                client = connect()
            except Exception as exc:  # noqa: BLE001 - re-raised unless transient
                if not _transient(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            self._clients.append(client)
            return client

    def _connect(self, addr, user, key, timeout, sock=None, label: str = "") -> paramiko.SSHClient:
        label = label or self.host
        want = self.pins.lookup(addr)
        if want is None:
            if sock is not None:
                sock.close()
            raise HostKeyUnknown(label, addr, self.pins.source)
        client = paramiko.SSHClient()
        # Only the pinned key is trusted, as HostBootstrap's `host_key`: paramiko asks for the pinned
        # key's type first (client.py: our_server_keys), checks it before authenticating, and raises
        # BadHostKeyException on another key of that type; a host offering none calls _Refuse.
        client.get_host_keys().add(addr, want.get_name(), want)
        client.set_missing_host_key_policy(_Refuse(label, addr, want))
        try:
            client.connect(
                addr, username=user, pkey=key, sock=sock, timeout=timeout, banner_timeout=timeout,
                auth_timeout=timeout, allow_agent=False, look_for_keys=False,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(label, addr, exc.key, want) from None
        except Exception:
            client.close()
            raise
        return client

    def run(self, command: str, stdin: Optional[str] = None, timeout: float = 300.0) -> Result:
        started = time.monotonic()
        chan = self.client.get_transport().open_session(timeout=CHANNEL_TIMEOUT)
        chan.settimeout(timeout)
        chan.exec_command(command)
        if stdin is not None:
            chan.sendall(stdin.encode())
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            if chan.recv_ready():
                out += chan.recv(65536)
            elif chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            elif time.monotonic() - started > timeout:
                chan.close()
                raise TimeoutError(f"{self.host}: {command!r} still running after {timeout} s")
            else:
                time.sleep(0.01)
        status = chan.recv_exit_status()
        chan.close()
        return Result(self.host, status, out.decode(errors="replace"), err.decode(errors="replace"),
                      time.monotonic() - started)

    def close(self) -> None:
        for client in reversed(self._clients):
            client.close()
        self._clients.clear()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def converge(stack: Stack, host: str, private_key: str, script: Optional[str] = None, user: str = derive.DEPLOY_USER,
             pins: Optional[Pins] = None) -> Result:
    """Run the host's converge script, exactly as the Pulumi command does (`sudo -n sh -s` on stdin).

    Placeholders still in the script are filled from LATE; one it lacks is a KeyError naming it,
    raised before connecting (a host must never get a file with a hole in it)."""
    script = script if script is not None else converge_script(stack, host)
    if late_names(script):
        script = fill(script, LATE)
    with Session(stack, host, user, private_key, pins=pins) as session:
        return session.run("sudo -n sh -s", stdin=script)


def can_login(stack: Stack, host: str, user: str, private_key: str, pins: Optional[Pins] = None) -> bool:
    """True when `user` with this key gets a shell on `host` (through the gateway). A host key
    error is no answer to that question: it is raised."""
    try:
        with Session(stack, host, user, private_key, pins=pins) as session:
            return session.run("true", timeout=30).ok
    except (paramiko.AuthenticationException, paramiko.SSHException, socket.error):
        return False


def main(argv: Optional[list[str]] = None) -> int:

    parser = argparse.ArgumentParser(prog="ops.remote", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    conv = sub.add_parser("converge", help="run one host's converge script now")
    conv.add_argument("--stack", required=True)
    conv.add_argument("--host", required=True)
    conv.add_argument("--key", required=True, help="the deploy key's private half (a file)")
    conv.add_argument("--known-hosts", help=f"the pinned host keys (default: ${KNOWN_HOSTS_FILE_ENV}, "
                                            f"else `pulumi stack output {KNOWN_HOSTS_OUTPUT}`)")
    conv.add_argument("--stack-file", help="read the stack config from this YAML file instead (labs)")
    args = parser.parse_args(argv)
    if args.stack_file:


        with open(args.stack_file, encoding="utf-8") as fh:
            stack = build_stack(yaml.safe_load(fh), args.stack)
    else:
        stack = load_stack(args.stack)
    try:
        pins = pins_for(args.stack, args.known_hosts)
        with open(args.key, encoding="utf-8") as fh:
            result = converge(stack, args.host, fh.read(), pins=pins)
    except KeyError as exc:
        print(f"ops remote: {args.host}'s converge needs generated secrets only `pulumi up` has ({exc.args[0]}); "
              "converge it with `pulumi up`", file=sys.stderr)
        return 1
    except (HostKeyError, ValueError, OSError) as exc:
        print(f"ops remote: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.status


if __name__ == "__main__":
    sys.exit(main())
