"""SSH to catalog hosts the way HostBootstrap does: as a user, through the gateway, one session per host.

    python -m ops.remote converge --stack staging --host bw1 --key ~/.ssh/deploy_ed25519

Used by people (a manual converge), by the lab tests and by the benchmarks.
"""

from __future__ import annotations

import argparse
import io
import socket
import sys
import time
from dataclasses import dataclass
from typing import Optional

import paramiko

from render.converge import converge_script
from spec import derive
from spec.model import Stack

CONNECT_TIMEOUT = 10.0
# Opening a channel on a live connection: quick on a quiet host, but with several labs sharing two
# cores, sshd's answer took over 10 s in a full test run.
CHANNEL_TIMEOUT = 30.0
# Like the Pulumi command provider's dial_error_limit: a host whose sshd is (re)starting (first
# boot, a converge that restarted it) drops the connection; dial again for a while.
DIAL_RETRY_SECONDS = 30.0


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

    def __init__(self, stack: Stack, host: str, user: str, private_key: str, timeout: float = CONNECT_TIMEOUT):
        self.host = host
        self._clients: list[paramiko.SSHClient] = []
        key = _pkey(private_key)
        gw_addr = derive.gateway_address(stack)
        if host == derive.gateway_name(stack):
            self.client = self._dial(lambda: self._connect(gw_addr, user, key, timeout))
        else:
            jump = self._dial(lambda: self._connect(gw_addr, user, key, timeout))
            target = (str(stack.hosts[host].lan_ip), 22)

            def through_jump() -> paramiko.SSHClient:
                channel = jump.get_transport().open_channel("direct-tcpip", target, ("127.0.0.1", 0), timeout=timeout)
                return self._connect(target[0], user, key, timeout, sock=channel)

            self.client = self._dial(through_jump)

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

    def _connect(self, addr, user, key, timeout, sock=None) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        # Lab and first-boot hosts have no known host key yet; the Pulumi command behaves the same.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(
                addr, username=user, pkey=key, sock=sock, timeout=timeout, banner_timeout=timeout,
                auth_timeout=timeout, allow_agent=False, look_for_keys=False,
            )
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


def converge(stack: Stack, host: str, private_key: str, script: Optional[str] = None, user: str = derive.DEPLOY_USER) -> Result:
    """Run the host's converge script, exactly as the Pulumi command does (`sudo -n sh -s` on stdin)."""
    with Session(stack, host, user, private_key) as session:
        return session.run("sudo -n sh -s", stdin=script if script is not None else converge_script(stack, host))


def can_login(stack: Stack, host: str, user: str, private_key: str) -> bool:
    """True when `user` with this key gets a shell on `host` (through the gateway)."""
    try:
        with Session(stack, host, user, private_key) as session:
            return session.run("true", timeout=30).ok
    except (paramiko.AuthenticationException, paramiko.SSHException, socket.error):
        return False


def main(argv: Optional[list[str]] = None) -> int:
    from spec.load import load_stack

    parser = argparse.ArgumentParser(prog="ops.remote", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    conv = sub.add_parser("converge", help="run one host's converge script now")
    conv.add_argument("--stack", required=True)
    conv.add_argument("--host", required=True)
    conv.add_argument("--key", required=True, help="the deploy key's private half (a file)")
    args = parser.parse_args(argv)
    stack = load_stack(args.stack)
    with open(args.key, encoding="utf-8") as fh:
        result = converge(stack, args.host, fh.read())
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.status


if __name__ == "__main__":
    sys.exit(main())
