"""Lab: a LAN host's first converge through the gateway, dialled exactly as pulumi-command 1.2.1 dials it.

The program runs under mocks with the lab's config; the commands it registers (connection, create,
stdin) are then run by lab.command_provider, which follows the provider's connection code line by
line: the bastion leg with its own limit, ONE direct-tcpip channel, the handshake retried on it.
The LAN hosts boot slowly: sshd answers at once (as on an image that starts it early), while the
real cloud-init stages run seconds apart; set_passwords restarts sshd midway and the deploy key
arrives last. With the program's order (gateway, then the probe, then the converge) the converge
succeeds on its first handshake; with main's order (the converge as soon as the VM exists) the same
runner fails and never recovers, although a fresh dial at that moment gets in.
The hosts get the lab's own host keys (lab.stack) through the real snippet, and the program is
run with them as its tls keys: every command pins them on both legs, as after a real `pulumi up`.
"""

from __future__ import annotations

import threading
import time

import pytest

from lab import hosts as labmod
from lab import command_provider as pr
from lab.hosts import Lab, layout
from lab.stack import LabStack, lab_stack
from lab.subnets import subnets
from ops.mockrun import OFFLINE_SECRETS, run_stack
from render import hostkeys
from model.load import PROJECT, build_stack
from tests.program_runs import SNIPPET, child, snippet_source

OK, WHY = labmod.available()
pytestmark = [pytest.mark.lab, pytest.mark.skipif(not OK, reason=WHY)]

NETS = subnets("tfirst")
FRONT, LAN, VPN = NETS.front, NETS.lan, NETS.vpn
HOSTS = ("gw", "h1", "h2")
COMMAND = "command:remote:Command"
PAUSE = 2.0
"""Seconds before each first-boot stage: a boot that takes a while, with sshd up all along."""
SETTLED = 20.0
"""How long main's converge keeps retrying after the host has accepted the deploy key, before we stop it."""


class Cancelled(Exception):
    """The engine cancelling the operation: retry.Until returns on ctx.Done() (until.go)."""


class SlowBoot(threading.Thread):
    """One host's first boot in the background, with a timestamp per stage and sshd's PID around them."""

    def __init__(self, lab: Lab, host: str, document: str):
        super().__init__(daemon=True)
        self.lab, self.host, self.document = lab, host, document
        self.at: dict[str, float] = {}
        self.sshd_pids: list[str] = [self._sshd_pid()]
        self.error: BaseException | None = None

    def _sshd_pid(self) -> str:
        return self.lab.run(self.host, ["systemctl", "show", "-p", "MainPID", "--value", "ssh"]).stdout.strip()

    def _stage(self, stage: tuple) -> None:
        self.at[stage[-1] if stage[0] != "single" else stage[2]] = time.monotonic()
        self.sshd_pids.append(self._sshd_pid())

    def run(self) -> None:
        try:
            self.lab.first_boot(self.host, self.document, pause=PAUSE, on_stage=self._stage)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    @property
    def key_at(self) -> float | None:
        return self.at.get("write_files_deferred")


def _lab_stack() -> LabStack:
    ls = lab_stack("prod", hosts=HOSTS, front=FRONT, lan=LAN, vpn=VPN)
    raw = ls.raw
    raw["hosts"]["h2"]["roles"] = ["app"]  # two plain hosts: one per ordering
    return LabStack(ls.name, raw, build_stack(raw, "prod"), ls.keys, ls.wireguard, ls.front_ip, ls.late)


def user_data(ls: LabStack, host: str) -> str:
    """The host's real snippet with the lab's host keys (the same the program registered, see the fixture)."""
    return ls.user_data(host)


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    ls = _lab_stack()
    secrets = {**OFFLINE_SECRETS, f"{PROJECT}:deployPrivateKey": ls.keys["deploy"].private_openssh}
    # The lab's host keys stand in for Pulumi's tls keys: the commands then pin (on both legs) and
    # the converge installs what the hosts' first boot delivers, as after a real `pulumi up`.
    program = run_stack("prod", raw=ls.raw, secrets=secrets, tls_keys=ls.tls_keys())
    commands = {c.name: c for c in program.of_type(COMMAND)}
    snippets = {h: snippet_source(child(program, h, SNIPPET))["data"] for h in HOSTS}
    with Lab(NETS.prefix, layout(HOSTS[0], HOSTS[1:], front=str(FRONT), lan=str(LAN)), front=str(FRONT), lan=str(LAN)) as lab:
        # The gateway first, as the program orders it: its own boot, then its converge (dialled directly).
        lab.first_boot("gw", user_data(ls, "gw"))
        gw = pr.run_inputs(commands["gw-converge"].inputs)
        yield {"lab": lab, "ls": ls, "commands": commands, "gw": gw, "snippets": snippets}


def test_the_lab_boots_the_snippets_the_program_registered_and_every_command_pins_their_keys_on_both_legs(first):
    ls, cmds = first["ls"], first["commands"]
    pin = {h: hostkeys.pin(ls.host_key(h)[f"{hostkeys.PIN_TYPE}-public"]) for h in HOSTS}
    assert len(set(pin.values())) == len(HOSTS)
    for host in HOSTS:
        assert first["snippets"][host] == user_data(ls, host), host
    gw = pr.unwrap_secrets(cmds["gw-converge"].inputs)["connection"]
    assert gw["hostKey"] == pin["gw"] and "proxy" not in gw
    for host in HOSTS[1:]:
        ready = pr.unwrap_secrets(cmds[f"{host}-ready"].inputs)["connection"]
        assert ready["hostKey"] == pin["gw"] and "proxy" not in ready
        converge = pr.unwrap_secrets(cmds[f"{host}-converge"].inputs)["connection"]
        assert converge["hostKey"] == pin[host] and converge["proxy"]["hostKey"] == pin["gw"]


def test_the_program_orders_each_lan_hosts_converge_after_the_gateway_and_its_probe(first):
    cmds = first["commands"]
    for host in HOSTS[1:]:
        deps = set(cmds[f"{host}-converge"].dependencies)
        assert {cmds["gw-converge"].urn, cmds[f"{host}-ready"].urn} <= deps


def test_the_gateway_converges_dialled_directly(first):
    assert first["lab"].run("gw", ["test", "-e", "/etc/ssh/sshd_config.d/10-hypha.conf"], check=False).returncode == 0


def test_with_the_probe_a_slow_first_boot_that_restarts_sshd_is_converged_on_the_first_handshake(first):
    lab, ls, cmds = first["lab"], first["ls"], first["commands"]
    boot = SlowBoot(lab, "h1", user_data(ls, "h1"))
    started = time.monotonic()
    boot.start()
    # What the engine does once gw-converge is done and h1's VM exists: h1-ready, then h1-converge.
    ready = pr.run_inputs(cmds["h1-ready"].inputs)
    ready_done = time.monotonic()
    attempts: list[pr.Attempt] = []
    converge = pr.run_inputs(cmds["h1-converge"].inputs, attempts=attempts)
    boot.join(120)
    assert boot.error is None, boot.error
    # The boot was slow, sshd answered before the key existed, and cloud-init restarted it midway.
    assert boot.key_at - started > 3 * PAUSE
    assert len(set(boot.sshd_pids)) >= 2, boot.sshd_pids
    assert boot.sshd_pids[0] not in ("", "0")
    # The probe waited for the deploy key (written last), then the converge got in first time.
    assert ready_done >= boot.key_at
    assert ready.stdout.startswith("h1 (10.213.126.3): sshd accepts the deploy key for deploy after ")
    assert attempts == []
    print(f"\nh1: deploy key after {boot.key_at - started:.1f} s, sshd PIDs {boot.sshd_pids}; {ready.stdout}; "
          f"converged {time.monotonic() - ready_done:.1f} s later, first handshake")
    assert lab.run("h1", ["test", "-e", "/etc/ssh/sshd_config.d/10-hypha.conf"], check=False).returncode == 0


def test_with_mains_order_the_same_boot_fails_for_good_on_the_one_channel(first):
    lab, ls, cmds = first["lab"], first["ls"], first["commands"]
    boot = SlowBoot(lab, "h2", user_data(ls, "h2"))
    boot.start()

    def engine_wait(seconds: float) -> None:
        # The provider's own wait, until the host has accepted the deploy key for SETTLED seconds.
        if boot.key_at is not None and time.monotonic() - boot.key_at > SETTLED:
            raise Cancelled
        time.sleep(seconds)

    # main: h2-converge depends on h2's VM only, so it dials at once, with the registered inputs.
    attempts: list[pr.Attempt] = []
    with pytest.raises((Cancelled, pr.ProviderError)):
        pr.run_inputs(cmds["h2-converge"].inputs, attempts=attempts, sleep=engine_wait)
    boot.join(120)
    assert boot.error is None, boot.error
    # One channel was opened (no "Dial from proxy" failure needed), then only handshakes failed on it:
    # the first because first boot had not delivered what the command pins and logs in with (sshd
    # still answered with the image's own host key, or the deploy key was not there yet), every
    # later one at once, on the closed channel.
    handshakes = [a for a in attempts if a.step == "Dial"]
    assert handshakes and all(a.step == "Dial" for a in attempts)
    first_error = handshakes[0].error
    assert ("ssh: handshake failed: ssh: host key mismatch" in first_error or "Authentication" in first_error
            or "auth" in first_error.lower()), handshakes[0]
    assert handshakes[0].at < boot.key_at
    late = [a for a in handshakes if a.at > boot.key_at + 5]
    print(f"\nh2: {len(handshakes)} handshakes failed on one channel, {len(late)} of them over 5 s after the key; "
          f"first: {handshakes[0].error}; last: {handshakes[-1].error}")
    assert len(late) >= 3, [(a.number, round(a.at - boot.key_at, 1)) for a in handshakes]
    # The host was fine all that time: a fresh dial, as the probe makes, gets in at once.
    ready = pr.run_inputs(cmds["h2-ready"].inputs)
    assert ready.stdout.endswith("after 0 s")
    fresh = pr.run(pr.Connection.from_inputs(pr.unwrap_secrets(cmds["h2-converge"].inputs)["connection"]), "id -un")
    assert fresh.stdout == "deploy" and fresh.attempts == []


def _gateway_sshd_down_for(lab: Lab, seconds: float) -> threading.Timer:
    """Stops the gateway's sshd now and starts it again after `seconds` (a gateway rebooting, say)."""
    lab.run("gw", ["systemctl", "stop", "ssh.service"])
    timer = threading.Timer(seconds, lambda: lab.run("gw", ["systemctl", "start", "ssh.service"]))
    timer.start()
    return timer


def test_the_bastion_leg_keeps_its_own_explicit_budget_where_mains_default_gives_up_after_11_seconds(first):
    lab, cmds = first["lab"], first["commands"]
    registered = pr.unwrap_secrets(cmds["h1-converge"].inputs)["connection"]
    assert registered["proxy"]["dialErrorLimit"] == 60
    mains = {**registered, "proxy": {k: v for k, v in registered["proxy"].items() if k != "dialErrorLimit"}}
    down = 15.0
    for inputs, should_pass in ((registered, True), (mains, False)):
        timer = _gateway_sshd_down_for(lab, down)
        attempts: list[pr.Attempt] = []
        started = time.monotonic()
        try:
            if should_pass:
                assert pr.run(pr.Connection.from_inputs(inputs), "id -un", attempts=attempts).stdout == "deploy"
                assert time.monotonic() - started >= down
            else:
                with pytest.raises(pr.ProviderError, match=r"^proxy: after 10 failed attempts: .*(refused|Errno)"):
                    pr.run(pr.Connection.from_inputs(inputs), "id -un", attempts=attempts)
                assert 11 <= time.monotonic() - started < down
        finally:
            timer.join()
        assert attempts and {a.step for a in attempts} == {"Dial proxy"}
        print(f"\nproxy limit {int(inputs['proxy'].get('dialErrorLimit', 10))}: {len(attempts)} failed dials "
              f"of the bastion over {attempts[-1].at - attempts[0].at:.1f} s, then {'in' if should_pass else 'gave up'}")
    lab.run("gw", ["systemctl", "is-active", "-q", "ssh.service"])
