"""Host tier: hosts answer with the keys the program made, and a host with another key is refused by every client.

The lab makes its own keys where Pulumi's would be (lab.stack.host_key_material) and delivers them
the way a VM gets them: the real cloud-init on the real snippet. A man in the middle is a host whose
sshd answers with another key (the key swapped on the host, or on the gateway in front of it).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ops import drift, remote
from lab.hosts import Lab, available, layout
from lab.stack import LabStack, boot_and_converge, host_key_material, lab_stack
from lab.subnets import subnets
from ops.remote import HostKeyMismatch, HostKeyUnknown, Pins, Session, converge
from render import hostkeys
from render.converge import fill
from model import derive

pytestmark = pytest.mark.lab

HOSTS = ("gw", "h1")
NETS = subnets("tmitm")
FRONT, LAN, VPN = str(NETS.front), str(NETS.lan), str(NETS.vpn)
POLICY = "Hardened Debian 12 (version 3)"
SSH_AUDIT = str(Path(sys.executable).with_name("ssh-audit"))
STATE = "/var/lib/hypha-infra"


class Ctx:
    def __init__(self, lab: Lab, ls: LabStack, tmp: Path):
        self.lab, self.ls, self.tmp = lab, ls, tmp
        self.key_file = ls.keys["deploy"].write(tmp / "deploy_ed25519")
        self.stack_file = tmp / "stack.yaml"
        self.stack_file.write_text(yaml.safe_dump(ls.raw))
        self.known_hosts = tmp / "known_hosts"
        self.known_hosts.write_text(ls.known_hosts())

    @property
    def stack(self):
        return self.ls.stack

    def deploy_key(self) -> str:
        return self.ls.keys["deploy"].private_openssh

    def drift(self, capsys) -> tuple[int, dict]:
        capsys.readouterr()
        code = drift.main(["--stack", "prod", "--stack-file", str(self.stack_file), "--key", str(self.key_file),
                           "--known-hosts", str(self.known_hosts), "--json"])
        return code, json.loads(capsys.readouterr().out)

    def host_state(self, host: str) -> str:
        """What a converge or a check would leave a trace in: its log and manifest, and sshd's logins."""
        return self.lab.run(host, ["sh", "-c", f"stat -c '%n %Y %s' {STATE}/last-converge.log {STATE}/manifest; "
                                               "journalctl -u ssh --no-pager -o cat | grep -c 'Accepted publickey' || true"]).stdout


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    ok, why = available()
    if not ok:
        pytest.skip(f"lab unavailable: {why}")
    ls = lab_stack("prod", hosts=HOSTS, members=(), front=ipaddress.ip_network(FRONT), lan=ipaddress.ip_network(LAN),
                   vpn=ipaddress.ip_network(VPN))
    with Lab(NETS.prefix, layout(HOSTS[0], HOSTS[1:], front=FRONT, lan=LAN), front=FRONT, lan=LAN) as lab:
        results = boot_and_converge(lab, ls)
        assert all(r.ok for r in results.values()), {h: r.stdout + r.stderr for h, r in results.items()}
        yield Ctx(lab, ls, tmp_path_factory.mktemp("hostkey"))


def _swap_host_key(ctx: Ctx, host: str) -> None:
    """The man in the middle: the host's sshd now answers with a key nobody pinned (the real one kept aside)."""
    key = hostkeys.key_path(hostkeys.ED25519)
    ctx.lab.run(host, ["sh", "-euc", f"cp -p {key} /root/real_key && cp -p {key}.pub /root/real_key.pub && "
                                     f"rm -f {key} {key}.pub && ssh-keygen -q -t ed25519 -N '' -f {key} && "
                                     "systemctl reload ssh"])


def _restore_host_key(ctx: Ctx, host: str) -> None:
    key = hostkeys.key_path(hostkeys.ED25519)
    ctx.lab.run(host, ["sh", "-euc", f"mv -f /root/real_key {key} && mv -f /root/real_key.pub {key}.pub && systemctl reload ssh"])


def _wait_ssh(ctx: Ctx, host: str) -> None:
    for _ in range(100):  # bounded: sshd re-executes on reload
        if ctx.lab.run(host, ["systemctl", "is-active", "-q", "ssh"], check=False).returncode == 0:
            return
    raise AssertionError(f"{host}: ssh did not come back")


def _offered_key(ctx: Ctx, host: str) -> str:
    return " ".join(ctx.lab.run(host, ["cat", hostkeys.key_path(hostkeys.ED25519) + ".pub"]).stdout.split()[:2])


def test_every_host_answers_with_the_key_cloud_init_delivered_and_holds_no_other(ctx):
    for host in HOSTS:
        material = ctx.ls.host_key(host)
        assert _offered_key(ctx, host) == hostkeys.pin(material["ed25519-public"])
        listing = ctx.lab.run(host, ["sh", "-c", "ls /etc/ssh/ssh_host_*"]).stdout.split()
        # The image's own keys (the lab host starts with an ed25519 and an ecdsa key) are gone.
        assert sorted(listing) == sorted(p for k in hostkeys.KEY_TYPES for p in (hostkeys.key_path(k), hostkeys.key_path(k) + ".pub"))
        for kind in hostkeys.KEY_TYPES:
            assert ctx.lab.run(host, ["cat", hostkeys.key_path(kind)]).stdout == material[f"{kind}-private"]
        # The first converge found cloud-init's files current: no key file changed, nothing re-made.
        log = ctx.lab.run(host, ["cat", f"{STATE}/last-converge.log"]).stdout
        assert "ssh_host_" not in log


def test_the_hardened_ssh_audit_policy_passes_with_the_programs_keys(ctx):
    gw = subprocess.run([SSH_AUDIT, "-P", POLICY, derive.gateway_address(ctx.stack)], capture_output=True, text=True, timeout=120)
    assert gw.returncode == 0, gw.stdout
    h1 = ctx.lab.netns_exec("gw", [SSH_AUDIT, "-P", POLICY, str(ctx.stack.hosts["h1"].lan_ip)], check=False, timeout=120)
    assert h1.returncode == 0, h1.stdout


def test_a_swapped_host_key_makes_the_converge_ops_remote_and_ops_drift_refuse_and_change_nothing(ctx, capsys):
    before = ctx.host_state("h1")
    _swap_host_key(ctx, "h1")
    _wait_ssh(ctx, "h1")
    try:
        with pytest.raises(HostKeyMismatch) as caught:
            converge(ctx.stack, "h1", ctx.deploy_key(), ctx.ls.script("h1"))
        message = str(caught.value)
        assert message.startswith(f"h1 ({ctx.stack.hosts['h1'].lan_ip}): host key mismatch")
        assert "pulumi stack output known_hosts" in message and "Nothing was sent" in message

        capsys.readouterr()
        code = remote.main(["converge", "--stack", "prod", "--stack-file", str(ctx.stack_file), "--host", "h1",
                            "--key", str(ctx.key_file), "--known-hosts", str(ctx.known_hosts)])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith("ops remote: h1 (") and "host key mismatch" in err

        code, report = ctx.drift(capsys)
        assert code == 1
        h1 = report["hosts"]["h1"]
        assert h1["status"] == "host-key" and "host key mismatch" in h1["error"]
        assert h1["findings"] == [] and h1["checked_files"] == 0  # nothing was read from it
        assert report["hosts"]["gw"]["status"] == "clean"
        # No login happened on h1, nothing was converged: the handshake failed before authentication.
        assert ctx.host_state("h1") == before
    finally:
        _restore_host_key(ctx, "h1")
        _wait_ssh(ctx, "h1")
    assert converge(ctx.stack, "h1", ctx.deploy_key(), ctx.ls.script("h1")).ok
    assert ctx.drift(capsys)[0] == 0


def test_a_gateway_with_another_key_stops_every_leg_behind_it(ctx, capsys):
    before = {h: ctx.host_state(h) for h in HOSTS}
    _swap_host_key(ctx, "gw")
    _wait_ssh(ctx, "gw")
    try:
        with pytest.raises(HostKeyMismatch, match=r"^gw \(10\.213\.120\.2\): host key mismatch"):
            converge(ctx.stack, "h1", ctx.deploy_key(), ctx.ls.script("h1"))  # refused on the proxy leg
        code, report = ctx.drift(capsys)
        assert code == 1
        assert report["hosts"]["gw"]["status"] == "host-key"
        assert report["hosts"]["h1"]["status"] == "error" and "gateway failed its host key check" in report["hosts"]["h1"]["error"]
        assert {h: ctx.host_state(h) for h in HOSTS} == before
    finally:
        _restore_host_key(ctx, "gw")
        _wait_ssh(ctx, "gw")
    assert converge(ctx.stack, "gw", ctx.deploy_key(), ctx.ls.script("gw")).ok


def test_a_host_without_a_pin_is_refused_not_trusted_on_first_use(ctx):
    only_gw = Pins("\n".join(line for line in ctx.ls.known_hosts().splitlines() if line.endswith("-gw")))
    with pytest.raises(HostKeyUnknown, match=r"^h1 \(10\.213\.121\.3\): no pinned host key"):
        Session(ctx.stack, "h1", derive.DEPLOY_USER, ctx.deploy_key(), pins=only_gw)


def test_a_rotation_logs_in_with_the_old_key_and_leaves_the_host_answering_with_the_new(ctx, capsys):
    old_pins = ctx.ls.pins()
    old_material = ctx.ls.host_keys["h1"]
    new_material = host_key_material()
    script = hostkeys.rotation_script("h1", 1)
    values = {hostkeys.late_name("h1", k, half): new_material[f"{k}-{half}"]
              for k in hostkeys.KEY_TYPES for half in ("private", "public")}
    with Session(ctx.stack, "h1", derive.DEPLOY_USER, ctx.deploy_key(), pins=old_pins) as session:
        result = session.run("sudo -n sh -s", stdin=fill(script, values))
    assert result.ok, result.stdout + result.stderr
    _wait_ssh(ctx, "h1")
    ctx.ls.host_keys["h1"] = new_material
    remote.LATE.update(ctx.ls.host_key_late())
    try:
        new_pins = ctx.ls.pins()
        assert _offered_key(ctx, "h1") == hostkeys.pin(new_material["ed25519-public"])
        with pytest.raises(HostKeyMismatch):
            Session(ctx.stack, "h1", derive.DEPLOY_USER, ctx.deploy_key(), pins=old_pins)
        # The converge (pinning the new key) finds the rotated files current.
        again = converge(ctx.stack, "h1", ctx.deploy_key(), ctx.ls.script("h1"), pins=new_pins)
        assert again.ok and "done: 0 file(s) changed, 0 removed" in again.stdout, again.stdout
        h1 = ctx.lab.netns_exec("gw", [SSH_AUDIT, "-P", POLICY, str(ctx.stack.hosts["h1"].lan_ip)], check=False, timeout=120)
        assert h1.returncode == 0, h1.stdout
    finally:
        # Back to the fixture's keys, the same way, so the module's other tests see what they pinned.
        back = {hostkeys.late_name("h1", k, half): old_material[f"{k}-{half}"]
                for k in hostkeys.KEY_TYPES for half in ("private", "public")}
        with Session(ctx.stack, "h1", derive.DEPLOY_USER, ctx.deploy_key(), pins=ctx.ls.pins()) as session:
            session.run("sudo -n sh -s", stdin=fill(script, back))
        ctx.ls.host_keys["h1"] = old_material
        remote.LATE.update(ctx.ls.host_key_late())
        _wait_ssh(ctx, "h1")
