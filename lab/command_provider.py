"""Runs a `command:remote:Command`'s inputs the way pulumi-command 1.2.1's provider does, with paramiko.

Pulumi's mocks never dial anything, and the provider plugin cannot be installed here; so the lab runs
the program's registered inputs (connection, create, stdin) through this, which copies the provider's
connection semantics step by step. References are to github.com/pulumi/pulumi-command at tag v1.2.1,
provider/pkg/provider/remote/ (connection.go, commandOutputs.go), to golang.org/x/crypto v0.48.0
(the version provider/go.mod:14 pins) and to pulumi's sdk/go/common/util/retry/until.go:

- Direct (no proxy): `dialWithRetry("Dial", limit, ssh.Dial)` (connection.go:198-201). ssh.Dial is a
  new TCP connection (net.DialTimeout with perDialTimeout) and a handshake on it (x/crypto
  ssh/client.go:177-187), so every try starts afresh.
- Through a proxy: the bastion is dialled like that but with the PROXY's dialErrorLimit
  (connection.go:209-215); then ONE direct-tcpip channel is opened from the bastion, retried with the
  connection's limit only until it opens (:222-224); then the SSH handshake is retried with that
  limit on that same channel (:232-237). NewClientConn closes the connection it was given when the
  handshake fails (ssh/client.go:83-85), so after one failure every further try fails at once.
- Retry schedule (dialWithRetry, connection.go:150-187, on retry.Until): try, and on failure wait
  100 ms, then x1.5 each time, capped at 5 s; give up once the failed dials exceed the limit
  (reachedDialingErrorLimit, :252-255: limit 10 means 11 dials); -1 is no limit. The message says
  "after <try> failed attempts" with the zero-based try, as the provider's does.
- Host key, on either leg (the connection's and the proxy's own `hostKey`, connectionBase): with it
  the server must present exactly that key (ssh.FixedHostKey: the key's wire bytes compared), and
  only its algorithm is offered (HostKeyAlgorithms, connection.go:87-94); without it any key is
  accepted (:95-98). Both keys are parsed before anything is dialled (SSHConfig, :191-194 and
  :204-207, the proxy's error prefixed "proxy: "). A mismatch fails the handshake before any
  authentication ("ssh: handshake failed: ssh: host key mismatch", x/crypto ssh/client.go
  NewClientConn, ssh/keys.go fixedHostKey.check), and like every dial error it is retried:
  afresh on the bastion or a direct host, on the one (then closed) channel behind the bastion.
- Auth: the private key (and the password, if any) (:106-129). The provider also offers an ssh-agent's
  keys when SSH_AUTH_SOCK is set (:131-145); this runner never does, like a runner without an agent.
- Run (commandOutputs.go:30-108): one session; PULUMI_COMMAND_STDOUT/STDERR set from the previous
  run's outputs unless addPreviousOutputInEnv is false (:51-71); stdin if non-empty; stdout and
  stderr kept with one trailing newline trimmed; a non-zero exit is an error carrying both.

Where x/crypto has no timeout at all (the handshake on an open connection, a channel open), paramiko
needs one: HANDSHAKE_BOUND is far beyond sshd's LoginGraceTime (30 s hardened, 120 s default), which
is what really ends such a wait, so it changes no outcome; it only keeps a broken test from hanging.
"""

from __future__ import annotations

import base64
import io
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar

import paramiko

# connection.go:32 (dialErrorDefault), :78 / proxyConnection.go:46 (perDialTimeout default), :57/:61.
DIAL_ERROR_DEFAULT = 10
PER_DIAL_TIMEOUT_DEFAULT = 15
# retry/until.go: DefaultDelay, DefaultBackoff, DefaultMaxDelay.
RETRY_DELAY = 0.1
RETRY_BACKOFF = 1.5
RETRY_MAX_DELAY = 5.0
HANDSHAKE_BOUND = 300.0

T = TypeVar("T")


class ProviderError(RuntimeError):
    """What the provider would report for the resource (its error text, then our context)."""


@dataclass
class Attempt:
    step: str
    """"Dial", "Dial proxy" or "Dial from proxy": the provider's own names (connection.go:199, :211, :222)."""
    number: int
    """1-based dial count, as the provider's status line prints it."""
    error: str
    at: float
    """time.monotonic() when the attempt failed."""


@dataclass
class Leg:
    """connectionBase (connection.go:41-52), with the provider's defaults (:54-83)."""

    host: str
    user: str = "root"
    port: int = 22
    private_key: Optional[str] = None
    password: Optional[str] = None
    dial_error_limit: int = DIAL_ERROR_DEFAULT
    per_dial_timeout: int = PER_DIAL_TIMEOUT_DEFAULT
    host_key: Optional[str] = None

    @classmethod
    def from_inputs(cls, inputs: dict) -> "Leg":
        """From the camelCase inputs the program registered (secrets already unwrapped)."""
        return cls(
            host=inputs["host"],
            user=inputs.get("user", "root"),
            port=int(inputs.get("port", 22)),
            private_key=inputs.get("privateKey"),
            password=inputs.get("password"),
            dial_error_limit=int(inputs.get("dialErrorLimit", DIAL_ERROR_DEFAULT)),
            per_dial_timeout=int(inputs.get("perDialTimeout", PER_DIAL_TIMEOUT_DEFAULT)),
            host_key=inputs.get("hostKey"),
        )


@dataclass
class Connection(Leg):
    proxy: Optional[Leg] = None

    @classmethod
    def from_inputs(cls, inputs: dict) -> "Connection":
        base = Leg.from_inputs(inputs)
        proxy = Leg.from_inputs(inputs["proxy"]) if inputs.get("proxy") else None
        return cls(**base.__dict__, proxy=proxy)


@dataclass
class Outcome:
    stdout: str
    stderr: str
    attempts: list[Attempt] = field(default_factory=list)


def unwrap_secrets(value: Any) -> Any:
    """The mocks' wire form keeps secrets as {sig, value}; the provider sees plain values."""
    if isinstance(value, dict):
        if "value" in value and len(value) == 2 and any(len(k) == 32 for k in value):
            return unwrap_secrets(value["value"])
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


def dial_with_retry(step: str, max_attempts: int, dial: Callable[[], T], attempts: list[Attempt],
                    sleep: Callable[[float], None] = time.sleep) -> T:
    """connection.go:150-187 on retry.Until (until.go): the same tries, waits and final message."""
    delay = RETRY_DELAY
    tried = 0
    while True:
        delay = min(delay, RETRY_MAX_DELAY)
        try:
            return dial()
        except Exception as exc:  # noqa: BLE001 - every dial error is retried, as the provider does
            dials = tried + 1
            attempts.append(Attempt(step, dials, _text(exc), time.monotonic()))
            if max_attempts > -1 and dials > max_attempts:
                raise ProviderError(f"after {tried} failed attempts: {_text(exc)}") from exc
        sleep(delay)
        delay *= RETRY_BACKOFF
        tried += 1


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _pkey(text: str) -> paramiko.PKey:
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise ProviderError("ssh: no key found")  # x/crypto's ParsePrivateKey error text


HostKey = tuple[str, bytes]
"""A pinned key: its type (the one algorithm offered) and its wire bytes (what FixedHostKey compares)."""


def _fixed_host_key(line: str) -> HostKey:
    """ssh.ParseAuthorizedKey: "<type> <base64> [comment]" -> (type, blob), the blob a key of that type."""
    try:
        kind, blob = line.split()[:2]
        raw = base64.b64decode(blob, validate=True)
        key = paramiko.PKey.from_type_string(kind, raw)
    except (ValueError, TypeError, paramiko.SSHException) as exc:
        raise ProviderError(f"failed to parse host key: {_text(exc)}") from exc
    return kind, key.asbytes()


def host_key_of(leg: Leg) -> Optional[HostKey]:
    """The host key part of connectionBase.SSHConfig (connection.go:85-98): None accepts any key."""
    return _fixed_host_key(leg.host_key) if leg.host_key is not None else None


def new_client_conn(sock: Any, leg: Leg, host_key: Optional[HostKey]) -> paramiko.Transport:
    """ssh.NewClientConn (x/crypto ssh/client.go:71-89): handshake and auth on `sock`; closes it on failure.

    `host_key` (host_key_of(leg)) is checked in the handshake, before any authentication is tried."""
    transport = paramiko.Transport(sock)
    transport.banner_timeout = HANDSHAKE_BOUND
    transport.handshake_timeout = HANDSHAKE_BOUND
    transport.auth_timeout = HANDSHAKE_BOUND
    if host_key:
        transport.get_security_options().key_types = [host_key[0]]  # HostKeyAlgorithms (connection.go:94)
    try:
        try:
            transport.start_client(timeout=HANDSHAKE_BOUND)
        except paramiko.SSHException as exc:
            raise paramiko.SSHException(f"ssh: handshake failed: {exc}") from exc
        if host_key and transport.get_remote_server_key().asbytes() != host_key[1]:
            raise paramiko.SSHException("ssh: handshake failed: ssh: host key mismatch")  # fixedHostKey.check
        if leg.private_key:
            transport.auth_publickey(leg.user, _pkey(leg.private_key))
        elif leg.password:
            transport.auth_password(leg.user, leg.password)
        else:
            raise paramiko.AuthenticationException("ssh: unable to authenticate, attempted methods [none]")
    except Exception:
        transport.close()
        sock.close()  # ssh/client.go:84: `c.Close()` before returning the handshake error
        raise
    return transport


def _tcp(host: str, port: int, timeout: int) -> socket.socket:
    """net.DialTimeout; perDialTimeout 0 is no maximum (connection.go:75-78)."""
    return socket.create_connection((host, port), timeout=timeout or None)


def ssh_dial(leg: Leg, host_key: Optional[HostKey]) -> paramiko.Transport:
    """ssh.Dial (x/crypto ssh/client.go:177-187): a new TCP connection, then NewClientConn on it."""
    sock = _tcp(leg.host, leg.port, leg.per_dial_timeout)
    sock.settimeout(None)  # the timeout covers the TCP dial only
    return new_client_conn(sock, leg, host_key)


def dial(conn: Connection, attempts: list[Attempt], sleep: Callable[[float], None] = time.sleep) -> list[paramiko.Transport]:
    """Connection.Dial (connection.go:189-243). Returns the transports, the one to run on last."""
    host_key = host_key_of(conn)  # c.SSHConfig() (:191-194): a bad key is no dial error, nor retried
    if conn.proxy is None:
        return [dial_with_retry("Dial", conn.dial_error_limit, lambda: ssh_dial(conn, host_key), attempts, sleep)]
    try:
        proxy_host_key = host_key_of(conn.proxy)  # c.Proxy.SSHConfig() (:204-207)
    except ProviderError as exc:
        raise ProviderError(f"proxy: {exc}") from exc
    tries = conn.dial_error_limit
    try:
        proxy = dial_with_retry("Dial proxy", conn.proxy.dial_error_limit, lambda: ssh_dial(conn.proxy, proxy_host_key),
                                attempts, sleep)
    except ProviderError as exc:
        raise ProviderError(f"proxy: {exc}") from exc
    try:
        # x/crypto Client.Dial("tcp", …) opens a direct-tcpip channel with a zero origin (ssh/tcpip.go).
        channel = dial_with_retry(
            "Dial from proxy", tries,
            lambda: proxy.open_channel("direct-tcpip", (conn.host, conn.port), ("0.0.0.0", 0), timeout=HANDSHAKE_BOUND),
            attempts, sleep,
        )
        # The same `channel` on every try: the provider never opens another (connection.go:232-237).
        target = dial_with_retry("Dial", tries, lambda: new_client_conn(channel, conn, host_key), attempts, sleep)
    except ProviderError as exc:
        proxy.close()
        raise ProviderError(f"proxy: {exc}") from exc
    except BaseException:  # cancelled: the provider's client goes with its process; ours must be closed
        proxy.close()
        raise
    return [proxy, target]


def run(conn: Connection, command: str, stdin: Optional[str] = None, *, add_previous_output_in_env: Optional[bool] = None,
        previous: Optional[Outcome] = None, timeout: float = 600.0, sleep: Callable[[float], None] = time.sleep,
        attempts: Optional[list[Attempt]] = None) -> Outcome:
    """CommandOutputs.run (commandOutputs.go:30-108) for a create or update.

    `attempts` (if given) collects every failed dial, also when the run fails; `sleep` is the wait
    between tries: one that raises is the engine cancelling the operation (retry.Until returns on
    ctx.Done()).
    """
    attempts = [] if attempts is None else attempts
    transports = dial(conn, attempts, sleep)
    try:
        chan = transports[-1].open_session(timeout=HANDSHAKE_BOUND)
        if (add_previous_output_in_env is None or add_previous_output_in_env) and previous is not None:
            # Set "optimistically"; a refusal is only a warning (:51-71), so no reply is awaited here.
            if previous.stdout:
                chan.set_environment_variable("PULUMI_COMMAND_STDOUT", previous.stdout)
            if previous.stderr:
                chan.set_environment_variable("PULUMI_COMMAND_STDERR", previous.stderr)
        chan.settimeout(timeout)
        chan.exec_command(command)
        if stdin:
            chan.sendall(stdin.encode())
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while not (chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready()):
            if chan.recv_ready():
                out += chan.recv(65536)
            elif chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            elif time.monotonic() > deadline:
                raise ProviderError(f"{command!r} still running after {timeout} s")
            else:
                time.sleep(0.01)
        status = chan.recv_exit_status()
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        if status != 0:
            raise ProviderError(f"Process exited with status {status}: running {command!r}:\n{stdout}{stderr}")
        return Outcome(stdout.removesuffix("\n"), stderr.removesuffix("\n"), attempts)
    finally:
        for t in reversed(transports):
            t.close()


def run_inputs(inputs: dict, **kw) -> Outcome:
    """A registered remote.Command's inputs (from ops.mockrun) run as its create."""
    plain = unwrap_secrets(inputs)
    return run(Connection.from_inputs(plain["connection"]), plain["create"], plain.get("stdin"),
               add_previous_output_in_env=plain.get("addPreviousOutputInEnv"), **kw)
