"""The provider runner's retry schedule and inputs are pulumi-command 1.2.1's (lab/command_provider.py cites the lines)."""

from __future__ import annotations

import io
import socket
import threading
import time

import paramiko
import pytest

from components.host_bootstrap import DIAL_ERROR_LIMIT
from lab import command_provider as pr
from lab.stack import ssh_keypair

pytestmark = pytest.mark.program


def _failing(n_failures: int, value: str = "client"):
    calls = {"n": 0}

    def dial():
        calls["n"] += 1
        if calls["n"] <= n_failures:
            raise ConnectionRefusedError(f"refused #{calls['n']}")
        return value

    return dial, calls


def test_the_default_limit_of_10_means_11_dials_over_about_11_seconds():
    waits: list[float] = []
    attempts: list[pr.Attempt] = []
    dial, calls = _failing(1000)
    with pytest.raises(pr.ProviderError, match=r"^after 10 failed attempts: ConnectionRefusedError: refused #11$"):
        pr.dial_with_retry("Dial proxy", pr.DIAL_ERROR_DEFAULT, dial, attempts, sleep=waits.append)
    assert calls["n"] == 11 and [a.number for a in attempts] == list(range(1, 12))
    assert waits == pytest.approx([0.1 * 1.5**i for i in range(10)])
    assert sum(waits) == pytest.approx(11.33, abs=0.01)


def test_waits_grow_by_half_and_stop_growing_at_5_seconds():
    waits: list[float] = []
    dial, _ = _failing(1000)
    with pytest.raises(pr.ProviderError, match=rf"^after {DIAL_ERROR_LIMIT} failed attempts"):
        pr.dial_with_retry("Dial", DIAL_ERROR_LIMIT, dial, [], sleep=waits.append)
    assert len(waits) == DIAL_ERROR_LIMIT
    assert max(waits) == 5.0 and waits[10:] == [5.0] * (DIAL_ERROR_LIMIT - 10)
    # HostBootstrap's 60: about 260 s of retries, the figure components/host_bootstrap.py quotes.
    assert 255 < sum(waits) < 265


def test_a_dial_that_succeeds_on_the_third_try_waited_twice():
    waits: list[float] = []
    dial, calls = _failing(2)
    assert pr.dial_with_retry("Dial", 10, dial, [], sleep=waits.append) == "client"
    assert calls["n"] == 3 and waits == pytest.approx([0.1, 0.15])


def test_no_limit_retries_until_the_operation_is_cancelled():
    class Cancelled(Exception):
        pass

    waits: list[float] = []

    def sleep(seconds):
        waits.append(seconds)
        if len(waits) == 40:
            raise Cancelled

    with pytest.raises(Cancelled):
        pr.dial_with_retry("Dial", -1, _failing(1000)[0], [], sleep=sleep)
    assert len(waits) == 40


def test_a_limit_of_zero_dials_once():
    dial, calls = _failing(1000)
    with pytest.raises(pr.ProviderError, match=r"^after 0 failed attempts"):
        pr.dial_with_retry("Dial", 0, dial, [], sleep=lambda s: None)
    assert calls["n"] == 1


def test_registered_inputs_become_a_connection_with_the_providers_defaults():
    sig = "4dabf18193072939515e22adb298388d"
    inputs = {
        sig: "1b47061264138c4ac30d75fd1eb44270",
        "value": {"host": "10.0.1.5", "user": "deploy", "privateKey": "K", "dialErrorLimit": 60,
                  "proxy": {"host": "203.0.113.10", "user": "deploy", "privateKey": "K"}},
    }
    conn = pr.Connection.from_inputs(pr.unwrap_secrets(inputs))
    assert (conn.host, conn.port, conn.user, conn.dial_error_limit, conn.per_dial_timeout) == ("10.0.1.5", 22, "deploy", 60, 15)
    assert conn.proxy is not None and conn.proxy.dial_error_limit == pr.DIAL_ERROR_DEFAULT and conn.proxy.host_key is None


def test_a_bad_host_key_is_the_providers_parse_error():
    with pytest.raises(pr.ProviderError, match="failed to parse host key"):
        pr._fixed_host_key("ssh-ed25519 not*base64")


# --- host_key, against real SSH servers on loopback (paramiko's server side) -------------------------


class _Server(threading.Thread):
    """An sshd stand-in on 127.0.0.1: answers with `host_key`, lets `user` in with `authorized`, runs any
    command as printing the user, and (for a bastion) opens direct-tcpip channels to where it is asked."""

    def __init__(self, host_key: paramiko.PKey, authorized: paramiko.PKey, user: str = "deploy"):
        super().__init__(daemon=True)
        self.host_key, self.authorized, self.user = host_key, authorized, user
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.auth_attempts: list[str] = []
        self.forwarded: list[tuple[str, int]] = []
        self.stopped = threading.Event()
        self.transports: list[paramiko.Transport] = []

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        server = self

        class Iface(paramiko.ServerInterface):
            def get_allowed_auths(self, username):
                return "publickey"

            def check_auth_publickey(self, username, key):
                server.auth_attempts.append(username)
                ok = username == server.user and key.asbytes() == server.authorized.asbytes()
                return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

            def check_channel_request(self, kind, chanid):
                return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

            def check_channel_exec_request(self, channel, command):
                def answer():
                    time.sleep(0.05)
                    channel.sendall(f"{server.user}\n".encode())
                    channel.send_exit_status(0)
                    channel.close()

                threading.Thread(target=answer, daemon=True).start()
                return True

            def check_channel_direct_tcpip_request(self, chanid, origin, destination):
                server.forwarded.append(tuple(destination))
                return paramiko.OPEN_SUCCEEDED

        transport = paramiko.Transport(sock)
        self.transports.append(transport)
        transport.add_server_key(self.host_key)
        try:
            transport.start_server(server=Iface())
        except (paramiko.SSHException, EOFError, OSError):
            return
        while transport.is_active() and not self.stopped.is_set():
            chan = transport.accept(0.2)
            if chan is not None and self.forwarded and chan.get_name() != "session":
                threading.Thread(target=_pipe, args=(chan, self.forwarded[-1]), daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()
        for t in self.transports:
            t.close()
        self.join(5)


def _pipe(chan: paramiko.Channel, destination: tuple[str, int]) -> None:
    """The bastion's side of a direct-tcpip channel: bytes both ways until either end closes."""
    try:
        upstream = socket.create_connection(destination, timeout=5)
    except OSError:
        chan.close()
        return

    def copy(src_recv, dst_send, done):
        try:
            while True:
                data = src_recv(65536)
                if not data:
                    break
                dst_send(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            done()

    threading.Thread(target=copy, args=(upstream.recv, chan.sendall, chan.close), daemon=True).start()
    copy(chan.recv, upstream.sendall, lambda: upstream.close())


def _key() -> tuple[paramiko.PKey, str]:
    """(key, its private half in OpenSSH form)."""
    pair = ssh_keypair("runner-test")
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pair.private_openssh)), pair.private_openssh


def _pin(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


@pytest.fixture
def servers():
    started: list[_Server] = []

    def start(host_key: paramiko.PKey, authorized: paramiko.PKey) -> _Server:
        s = _Server(host_key, authorized)
        s.start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def _no_wait(seconds: float) -> None:
    return None


def test_a_host_with_another_key_than_the_pinned_one_is_refused_before_any_login_on_every_fresh_dial(servers):
    deploy, private = _key()
    real, other = _key()[0], _key()[0]
    host = servers(real, deploy)
    conn = pr.Connection(host="127.0.0.1", port=host.port, user="deploy", private_key=private, dial_error_limit=2,
                         host_key=_pin(other))
    attempts: list[pr.Attempt] = []
    with pytest.raises(pr.ProviderError, match=r"^after 2 failed attempts: SSHException: ssh: handshake failed: ssh: host key mismatch$"):
        pr.run(conn, "id -un", attempts=attempts, sleep=_no_wait)
    assert [a.step for a in attempts] == ["Dial"] * 3 and host.connections == 3
    assert host.auth_attempts == []  # the key was never offered to a host that is not the pinned one
    # The same connection pinning the key the host has gets in.
    conn.host_key = _pin(real)
    assert pr.run(conn, "id -un", sleep=_no_wait).stdout == "deploy"
    assert host.auth_attempts == ["deploy"]


def test_a_bastion_with_another_key_than_the_proxys_pin_is_refused_and_nothing_is_forwarded(servers):
    deploy, private = _key()
    gw_key, target_key, other = _key()[0], _key()[0], _key()[0]
    target = servers(target_key, deploy)
    gw = servers(gw_key, deploy)
    conn = pr.Connection(host="127.0.0.1", port=target.port, user="deploy", private_key=private, host_key=_pin(target_key),
                         proxy=pr.Leg(host="127.0.0.1", port=gw.port, user="deploy", private_key=private,
                                      dial_error_limit=1, host_key=_pin(other)))
    attempts: list[pr.Attempt] = []
    with pytest.raises(pr.ProviderError, match=r"^proxy: after 1 failed attempts: .*ssh: host key mismatch$"):
        pr.run(conn, "id -un", attempts=attempts, sleep=_no_wait)
    assert [a.step for a in attempts] == ["Dial proxy"] * 2
    assert gw.auth_attempts == [] and gw.forwarded == [] and target.connections == 0
    conn.proxy.host_key = _pin(gw_key)
    assert pr.run(conn, "id -un", sleep=_no_wait).stdout == "deploy"
    assert gw.forwarded == [("127.0.0.1", target.port)]


def test_a_lan_host_with_another_key_behind_the_right_bastion_is_refused_on_the_one_channel(servers):
    deploy, private = _key()
    gw_key, target_key, other = _key()[0], _key()[0], _key()[0]
    target = servers(target_key, deploy)
    gw = servers(gw_key, deploy)
    conn = pr.Connection(host="127.0.0.1", port=target.port, user="deploy", private_key=private, dial_error_limit=3,
                         host_key=_pin(other),
                         proxy=pr.Leg(host="127.0.0.1", port=gw.port, user="deploy", private_key=private, host_key=_pin(gw_key)))
    attempts: list[pr.Attempt] = []
    with pytest.raises(pr.ProviderError, match=r"^proxy: after 3 failed attempts: "):
        pr.run(conn, "id -un", attempts=attempts, sleep=_no_wait)
    handshakes = [a for a in attempts if a.step == "Dial"]
    assert len(handshakes) == 4 and handshakes[0].error == "SSHException: ssh: handshake failed: ssh: host key mismatch"
    # One channel, closed by the refusal: the later tries fail on it without reaching the host again.
    assert gw.auth_attempts == ["deploy"] and len(gw.forwarded) == 1
    assert target.connections == 1 and target.auth_attempts == []


@pytest.mark.parametrize("leg", ["connection", "proxy"])
def test_a_pin_that_is_no_key_is_refused_before_anything_is_dialled(servers, leg):
    deploy, private = _key()
    gw = servers(_key()[0], deploy)
    bad = "ssh-ed25519 AAAA"
    conn = pr.Connection(host="127.0.0.1", port=gw.port, user="deploy", private_key=private,
                         host_key=bad if leg == "connection" else None,
                         proxy=pr.Leg(host="127.0.0.1", port=gw.port, user="deploy", private_key=private,
                                      host_key=bad if leg == "proxy" else None))
    attempts: list[pr.Attempt] = []
    prefix = "proxy: " if leg == "proxy" else ""
    with pytest.raises(pr.ProviderError, match=rf"^{prefix}failed to parse host key: "):
        pr.run(conn, "id -un", attempts=attempts, sleep=_no_wait)
    assert attempts == [] and gw.connections == 0
