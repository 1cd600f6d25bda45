"""Host tier: a gateway and two hosts converged from bare over real SSH through the gateway, as prod."""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest
import testinfra

from lab.hosts import Lab, available, layout
from lab.stack import LabStack, boot_and_converge, lab_stack
from lab.subnets import subnets
from ops.remote import LATE, Result, Session, can_login, converge
from render.converge import converge_script, fill
from render.roles.base import SSHD_DROPIN
from render.roles import host_plan
from model import derive

pytestmark = pytest.mark.lab

HOSTS = ("gw", "h1", "h2")
NETS = subnets("hcv")
POLICY = "Hardened Debian 12 (version 3)"
SSH_AUDIT = str(Path(sys.executable).with_name("ssh-audit"))
# Units whose start time must not move when nothing changed.
WATCHED_UNITS = ("ssh", "nftables", "prometheus-node-exporter", "systemd-journald")
STATE = "/var/lib/hypha-infra"


@dataclass
class Ctx:
    lab: Lab
    ls: LabStack
    first: dict[str, Result]
    sessions: list = field(default_factory=list)

    @property
    def stack(self):
        return self.ls.stack

    def key(self, person: str) -> str:
        return self.ls.keys[person].private_openssh

    def converge(self, host: str, script: str | None = None) -> Result:
        return converge(self.stack, host, self.key("deploy"), script=script)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    ok, why = available()
    if not ok:
        pytest.skip(f"lab unavailable: {why}")
    ls = lab_stack("prod", hosts=HOSTS, front=NETS.front, lan=NETS.lan, vpn=NETS.vpn)
    front, lan = str(NETS.front), str(NETS.lan)
    with Lab(NETS.prefix, layout(HOSTS[0], HOSTS[1:], front=front, lan=lan), front=front, lan=lan) as lab:
        # Each VM's first boot with its real snippet, as on Proxmox; then converge, gateway first.
        c = Ctx(lab, ls, boot_and_converge(lab, ls))
        try:
            yield c
        finally:
            for session in c.sessions:
                session.close()


def _testinfra(ctx: Ctx, host: str, tmp_path: Path, user: str = "deploy"):
    """A testinfra host over a pinned ops.remote.Session (both legs check the host keys, as every
    session does); closed with the lab, before its namespaces go."""
    session = Session(ctx.stack, host, user, ctx.key(user))
    ctx.sessions.append(session)
    address = derive.gateway_address(ctx.stack) if host == derive.gateway_name(ctx.stack) else str(ctx.stack.hosts[host].lan_ip)
    t = testinfra.get_host(f"paramiko://{user}@{address}")
    t.backend.__dict__["client"] = session.client  # testinfra's cached client: never its own, unpinned one
    return t


def _unit_state(ctx: Ctx, host: str) -> dict[str, str]:
    units = list(WATCHED_UNITS) + (["wg-quick@wg0"] if host == derive.gateway_name(ctx.stack) else [])
    out = ctx.lab.run(host, ["systemctl", "show", "-p", "Id,MainPID,ActiveEnterTimestampMonotonic,ActiveState", *units]).stdout
    state = {}
    for block in out.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines())
        state[props.pop("Id")] = props
    return state


def test_gateway_and_hosts_converge_from_bare(ctx):
    for host, result in ctx.first.items():
        assert result.ok, f"{host}: {result.stdout}\n{result.stderr}"
        assert result.stderr == "", result.stderr
        assert "changed /etc/nftables.conf" in result.stdout
        assert "changed /etc/default/prometheus-node-exporter" in result.stdout
        # cloud-init wrote the very same access files on first boot: converge finds nothing to change.
        for path in (SSHD_DROPIN, "/etc/sudoers.d/90-hypha", "/etc/ssh/authorized_keys/alice"):
            assert f"changed {path}" not in result.stdout
    assert "wireguard public key" in ctx.first["gw"].stdout


def test_second_run_changes_nothing_and_restarts_nothing(ctx):
    before = {h: _unit_state(ctx, h) for h in HOSTS}
    for host in HOSTS:
        again = ctx.converge(host)
        assert again.ok, again.stderr
        assert "done: 0 file(s) changed, 0 removed" in again.stdout
        acted = [line for line in again.stdout.splitlines() if re.search(r": (changed|reload|restart|started|enabled|user .* created)", line)]
        assert acted == [], f"{host} did work on a converged host: {acted}"
    assert {h: _unit_state(ctx, h) for h in HOSTS} == before


def test_the_deploy_users_manager_lingers_so_no_login_waits_to_start_it(ctx):
    """logind's own answer (its Linger property reads the linger file) and the manager running."""
    for host in HOSTS:
        assert ctx.lab.run(host, ["loginctl", "show-user", "deploy", "-p", "Linger", "--value"]).stdout.strip() == "yes"
        uid = ctx.lab.run(host, ["id", "-u", "deploy"]).stdout.strip()
        assert ctx.lab.run(host, ["systemctl", "is-active", f"user@{uid}.service"], check=False).stdout.strip() == "active"


def test_people_keys_and_sudo_follow_the_access_model(ctx, tmp_path):
    for host in ("gw", "h1"):
        t = _testinfra(ctx, host, tmp_path)
        for admin in ctx.stack.access.admins:
            assert t.user(admin).exists
            assert "hypha-people" in t.user(admin).groups
            keys = t.file(f"/etc/ssh/authorized_keys/{admin}")
            assert keys.user == "root" and keys.mode == 0o644
            assert keys.content_string == ctx.ls.keys[admin].public_line + "\n"
        assert not t.user("dave").exists  # a staging-only member has no account on prod
        assert t.file("/etc/sudoers.d/90-hypha").mode == 0o440
    with Session(ctx.stack, "h1", "alice", ctx.key("alice")) as s:
        assert s.run("sudo -n id -u").stdout.strip() == "0"


def test_sshd_effective_settings_are_the_hardened_ones(ctx, tmp_path):
    t = _testinfra(ctx, "h1", tmp_path)
    effective = {}
    for line in t.check_output("sudo -n sshd -T").splitlines():
        key, _, value = line.partition(" ")
        effective.setdefault(key, []).append(value)
    assert effective["passwordauthentication"] == ["no"]
    assert effective["permitrootlogin"] == ["no"]
    assert effective["kbdinteractiveauthentication"] == ["no"]
    assert effective["authenticationmethods"] == ["publickey"]
    assert effective["authorizedkeysfile"] == ["/etc/ssh/authorized_keys/%u"]
    assert sorted(effective["allowusers"]) == ["alice", "bob", "deploy"]
    assert effective["allowtcpforwarding"] == ["no"]
    assert effective["x11forwarding"] == ["no"]


def _ssh_audit(ctx: Ctx, address: str, ns: str | None = None) -> subprocess.CompletedProcess:
    cmd = [SSH_AUDIT, "-P", POLICY, address]
    if ns is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return ctx.lab.netns_exec(ns, cmd, check=False, timeout=120)


def test_ssh_audit_hardened_debian_12_policy_passes(ctx):
    gw = _ssh_audit(ctx, derive.gateway_address(ctx.stack))
    assert gw.returncode == 0, gw.stdout
    assert "Passed" in gw.stdout
    # A LAN host is audited from the gateway's network, the only place its port 22 is open to.
    h1 = _ssh_audit(ctx, str(ctx.stack.hosts["h1"].lan_ip), ns="gw")
    assert h1.returncode == 0, h1.stdout


def _tcp(ctx: Ctx, ns: str, address: str, port: int, timeout: float = 2.0) -> bool:
    probe = (
        "import socket,sys\n"
        f"s=socket.socket(); s.settimeout({timeout})\n"
        f"sys.exit(0 if s.connect_ex(({address!r},{port}))==0 else 1)\n"
    )
    return ctx.lab.netns_exec(ns, [sys.executable, "-c", probe], check=False, timeout=timeout + 10).returncode == 0


def test_node_exporter_answers_on_the_lan_address_to_the_monitoring_host_only(ctx):
    h1 = str(ctx.stack.hosts["h1"].lan_ip)
    listening = ctx.lab.run("h1", ["ss", "-ltnH", "sport", "= :9100"]).stdout
    assert f"{h1}:9100" in listening and "0.0.0.0:9100" not in listening and "*:9100" not in listening
    fetch = (
        "import urllib.request\n"
        f"print(urllib.request.urlopen('http://{h1}:9100/metrics', timeout=5).read().decode()[:100000])\n"
    )
    metrics = ctx.lab.netns_exec("h2", [sys.executable, "-c", fetch]).stdout  # h2 has the monitoring role
    assert "node_exporter_build_info" in metrics
    assert not _tcp(ctx, "gw", h1, 9100), "node_exporter must not answer anyone but the monitoring host"


def test_a_host_refuses_ssh_from_anything_but_the_gateway(ctx):
    h1 = str(ctx.stack.hosts["h1"].lan_ip)
    assert _tcp(ctx, "gw", h1, 22)
    assert not _tcp(ctx, "h2", h1, 22), "a LAN neighbour reached h1's sshd"
    # And from the internet side there is no way to the LAN at all.
    with pytest.raises(OSError):
        socket.create_connection((h1, 22), timeout=2).close()


def test_a_staging_only_members_key_is_refused_on_a_prod_host(ctx):
    ls = ctx.ls
    assert "dave" in ls.stack.people and "dave" not in derive.login_people(ls.stack)
    assert not can_login(ls.stack, "h1", "dave", ctx.key("dave"))
    assert not can_login(ls.stack, "gw", "dave", ctx.key("dave"))
    assert can_login(ls.stack, "h1", "alice", ctx.key("alice"))


def test_the_deploy_key_is_refused_from_anywhere_but_its_source(ctx):
    """The gateway takes the deploy key only from the deployment server; h1 is not that."""
    gw_pin = next(line for line in ctx.ls.known_hosts().splitlines() if line.endswith("-gw"))
    probe = (
        "import io,sys,paramiko\n"
        "k=paramiko.Ed25519Key.from_private_key(io.StringIO(sys.stdin.read()))\n"
        "c=paramiko.SSHClient(); c.set_missing_host_key_policy(paramiko.RejectPolicy())\n"
        f"e=paramiko.hostkeys.HostKeyEntry.from_line({gw_pin!r})\n"
        "[c.get_host_keys().add(n, e.key.get_name(), e.key) for n in e.hostnames]\n"
        f"c.connect({str(ctx.stack.hosts['gw'].lan_ip)!r}, username='deploy', pkey=k, timeout=5, allow_agent=False, look_for_keys=False)\n"
    )
    result = ctx.lab.netns_exec("h1", [sys.executable, "-c", probe], input=ctx.key("deploy"), check=False)
    assert result.returncode != 0 and "Authentication failed" in result.stderr
    assert can_login(ctx.stack, "gw", "deploy", ctx.key("deploy"))


def test_a_broken_sshd_dropin_is_rejected_and_login_keeps_working(ctx):
    stack = ctx.stack
    plan = host_plan(stack, "h1")
    plan.files = [
        f if f.path != SSHD_DROPIN else type(f)(**{**f.__dict__, "content": "NoSuchOption yes\n" + f.content})
        for f in plan.files
    ]
    live_before = ctx.lab.run("h1", ["sha256sum", SSHD_DROPIN]).stdout
    state_before = _unit_state(ctx, "h1")
    result = ctx.converge("h1", converge_script(stack, "h1", plan))
    assert result.status != 0
    assert f"{SSHD_DROPIN} was rejected by its checker (sshd); nothing was changed" in result.stderr
    assert ctx.lab.run("h1", ["sha256sum", SSHD_DROPIN]).stdout == live_before
    assert _unit_state(ctx, "h1") == state_before, "sshd or another unit was restarted"
    assert ctx.lab.run("h1", ["systemctl", "is-active", "ssh"]).stdout.strip() == "active"
    assert can_login(stack, "h1", "alice", ctx.key("alice"))


def _changed_journald_plan(ctx: Ctx, size: str):
    plan = host_plan(ctx.stack, "h1")
    journald = next(f for f in plan.files if f.path.endswith("journald.conf.d/50-hypha.conf"))
    new_content = journald.content.replace("SystemMaxUse=500M", f"SystemMaxUse={size}")
    assert new_content != journald.content
    plan.files = [f if f is not journald else type(f)(**{**f.__dict__, "content": new_content}) for f in plan.files]
    # Filled as the host receives it (its host keys are late values): the test sends it itself.
    return fill(converge_script(ctx.stack, "h1", plan), LATE), new_content


def _start_held_converge(ctx: Ctx, script: str) -> Session:
    """Start a converge that pauses between swapping files and reloading units; return once it has swapped."""
    held = script.replace("\n# 7. Reload", "\nsleep 3\n# 7. Reload", 1)
    assert held != script
    session = Session(ctx.stack, "h1", "deploy", ctx.key("deploy"))
    chan = session.client.get_transport().open_session()
    chan.exec_command("sudo -n sh -s")
    chan.sendall(held.encode())
    chan.shutdown_write()
    seen, deadline = b"", time.monotonic() + 60
    while b"changed /etc/systemd/journald.conf.d/50-hypha.conf" not in seen and time.monotonic() < deadline:
        if chan.recv_ready():
            seen += chan.recv(65536)
        else:
            time.sleep(0.02)
    assert b"changed /etc/systemd/journald.conf.d" in seen, seen.decode()
    return session


def _wait_no_converge(ctx: Ctx) -> None:
    for _ in range(150):
        if ctx.lab.run("h1", ["pgrep", "-f", "sh -s"], check=False).returncode != 0:
            return
        time.sleep(0.1)
    pytest.fail("a converge is still running on h1")


def test_a_dropped_session_does_not_stop_a_converge_half_way(ctx):
    script, new_content = _changed_journald_plan(ctx, "450M")
    journald_before = _unit_state(ctx, "h1")["systemd-journald.service"]
    _start_held_converge(ctx, script).close()  # the SSH session dies mid-run
    _wait_no_converge(ctx)
    log = ctx.lab.run("h1", ["cat", f"{STATE}/last-converge.log"]).stdout
    assert "restart systemd-journald" in log and "done:" in log, log
    assert _unit_state(ctx, "h1")["systemd-journald.service"] != journald_before
    again = ctx.converge("h1", script)
    assert again.ok and "done: 0 file(s) changed" in again.stdout
    assert "restart" not in again.stdout


def test_an_interrupted_converge_leaves_the_host_working_and_the_next_run_completes_it(ctx):
    script, new_content = _changed_journald_plan(ctx, "400M")
    journald_before = _unit_state(ctx, "h1")
    session = _start_held_converge(ctx, script)
    # Killed outright between the swap and the reloads (what a crash or an OOM kill does).
    ctx.lab.run("h1", ["pkill", "-KILL", "-f", "sh -s"])
    session.close()
    _wait_no_converge(ctx)
    pending = ctx.lab.run("h1", ["cat", f"{STATE}/pending-units"], check=False)
    assert pending.returncode == 0 and "systemd-journald" in pending.stdout, "the owed reload was not recorded"
    assert _unit_state(ctx, "h1") == journald_before, "the killed run still reloaded something"
    assert can_login(ctx.stack, "h1", "alice", ctx.key("alice")), "the interrupted host no longer lets people in"
    assert ctx.lab.run("h1", ["systemctl", "is-active", "ssh"]).stdout.strip() == "active"

    again = ctx.converge("h1", script)
    assert again.ok, again.stderr
    assert "redoing reloads owed by an interrupted run" in again.stdout
    assert "done: 0 file(s) changed" in again.stdout  # the files were already in place
    assert ctx.lab.run("h1", ["test", "!", "-e", f"{STATE}/pending-units"], check=False).returncode == 0
    after = _unit_state(ctx, "h1")
    assert after["systemd-journald.service"] != journald_before["systemd-journald.service"], "journald was never restarted"
    manifest = ctx.lab.run("h1", ["cat", f"{STATE}/manifest"]).stdout
    assert hashlib.sha256(new_content.encode()).hexdigest() in manifest

    # Back to the real plan for whatever runs next.
    assert ctx.converge("h1").ok


def test_lab_tools_are_the_real_ones():
    """The checks above ran the real tools, not stand-ins."""
    assert Path(SSH_AUDIT).exists()
    assert shutil.which("systemd-nspawn")
    assert paramiko.__version__
