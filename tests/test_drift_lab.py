"""Host tier: `ops drift` against lab hosts converged as prod, through the gateway, as the daily job runs it."""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml

from model import derive
from ops import drift
from ops.remote import Pins, Session
from lab.hosts import Lab, available, layout
from lab.stack import LabStack, boot_and_converge, lab_stack
from lab.subnets import subnets
from render.roles import host_plan

pytestmark = pytest.mark.lab

HOSTS = ("gw", "h1", "h2")
NETS = subnets("hdr")
FRONT, LAN, VPN = str(NETS.front), str(NETS.lan), str(NETS.vpn)
JOURNALD = "/etc/systemd/journald.conf.d/50-hypha.conf"


class Ctx:
    def __init__(self, lab: Lab, ls: LabStack, stack_file, key_file):
        self.lab, self.ls, self.stack_file, self.key_file = lab, ls, stack_file, key_file

    def drift(self, capsys, *extra: str) -> tuple[int, dict, str]:
        """`python -m ops drift` as a person runs it; (exit code, JSON report, stderr)."""
        capsys.readouterr()
        code = drift.main(["--stack", "prod", "--stack-file", str(self.stack_file), "--key", str(self.key_file),
                           "--known-hosts", str(self.stack_file.with_name("known_hosts")), "--json", *extra])
        out = capsys.readouterr()
        return code, json.loads(out.out), out.err

    def desired(self, host: str, path: str) -> str:
        return next(f.content for f in host_plan(self.ls.stack, host).files if f.path == path)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    ok, why = available()
    if not ok:
        pytest.skip(f"lab unavailable: {why}")
    import ipaddress

    ls = lab_stack("prod", hosts=HOSTS, front=ipaddress.ip_network(FRONT), lan=ipaddress.ip_network(LAN),
                   vpn=ipaddress.ip_network(VPN))
    tmp = tmp_path_factory.mktemp("drift")
    stack_file = tmp / "stack.yaml"
    stack_file.write_text(yaml.safe_dump(ls.raw))
    key_file = ls.keys["deploy"].write(tmp / "deploy_ed25519")
    (tmp / "known_hosts").write_text(ls.known_hosts())  # as `pulumi stack output known_hosts` gives it
    with Lab(NETS.prefix, layout(HOSTS[0], HOSTS[1:], front=FRONT, lan=LAN), front=FRONT, lan=LAN) as lab:
        results = boot_and_converge(lab, ls)
        assert all(r.ok for r in results.values()), {h: r.stderr for h, r in results.items()}
        yield Ctx(lab, ls, stack_file, key_file)


def test_a_converged_lab_is_clean(ctx, capsys):
    code, report, err = ctx.drift(capsys)
    assert code == 0, json.dumps(report, indent=1)
    assert report["status"] == "clean" and err == ""
    assert {h: r["status"] for h, r in report["hosts"].items()} == {h: "clean" for h in HOSTS}
    assert all(r["checked_files"] >= 10 for r in report["hosts"].values())


def test_a_hand_edited_file_is_drift_with_a_diff_naming_it(ctx, capsys):
    ctx.lab.run("h1", ["sh", "-c", f"echo SystemMaxUse=5G >> {JOURNALD}"])
    try:
        code, report, _ = ctx.drift(capsys)
        assert code == 2
        assert report["hosts"]["gw"]["status"] == report["hosts"]["h2"]["status"] == "clean"
        [finding] = report["hosts"]["h1"]["findings"]
        assert (finding["kind"], finding["path"]) == ("file-changed", JOURNALD)
        assert f"--- {JOURNALD} (desired)\n+++ {JOURNALD} (on h1)\n" in finding["diff"]
        assert "\n+SystemMaxUse=5G\n" in finding["diff"]
        # The text report, as the scheduled job prints it, names the file and shows the diff too.
        assert drift.main(["--stack", "prod", "--stack-file", str(ctx.stack_file), "--key", str(ctx.key_file),
                           "--known-hosts", str(ctx.stack_file.with_name("known_hosts"))]) == 2
        text = capsys.readouterr().out
        assert f"file-changed: {JOURNALD}: content differs" in text and "+SystemMaxUse=5G" in text
    finally:
        ctx.lab.run("h1", ["sh", "-c", f"cat > {JOURNALD}"], input=ctx.desired("h1", JOURNALD))


def test_a_stray_authorized_key_is_reported(ctx, capsys):
    stray = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOzOiPD8QgXCk39Zo/oLiLQ6NMgw1OfltR1r8oldoVBE mallory@laptop"
    ctx.lab.run("h2", ["sh", "-c", f"echo '{stray}' > /etc/ssh/authorized_keys/mallory"])
    ctx.lab.run("gw", ["sh", "-c", f"mkdir -p ~alice/.ssh && echo '{stray}' > ~alice/.ssh/authorized_keys"])
    try:
        code, report, _ = ctx.drift(capsys)
        assert code == 2
        found = {h: [(f["kind"], f["path"]) for f in r["findings"]] for h, r in report["hosts"].items()}
        assert found == {
            "gw": [("unmanaged-key", "/home/alice/.ssh/authorized_keys")],
            "h1": [],
            "h2": [("unmanaged-key", "/etc/ssh/authorized_keys/mallory")],
        }
        assert "mallory@laptop" in report["hosts"]["h2"]["findings"][0]["detail"]
    finally:
        ctx.lab.run("h2", ["rm", "-f", "/etc/ssh/authorized_keys/mallory"])
        ctx.lab.run("gw", ["sh", "-c", "rm -f ~alice/.ssh/authorized_keys"])
    assert ctx.drift(capsys)[0] == 0


LOGIND_PAUSE = 35.0  # over the 30 s the channel opens were bounded by before (CI timed out on them)


def test_a_login_waits_for_a_slow_logind_and_then_runs(ctx):
    """sshd serves no channel of a new login until pam_systemd's CreateSession call is answered
    (ops/remote.py CHANNEL_TIMEOUT): with h1's logind paused, a session through the gateway waits
    for it, then runs its command."""
    pid = ctx.lab.run("h1", ["systemctl", "show", "-P", "MainPID", "systemd-logind.service"]).stdout.strip()
    assert pid.isdigit() and pid != "0", pid
    ctx.lab.run("h1", ["kill", "-STOP", pid])
    resume = threading.Timer(LOGIND_PAUSE, lambda: ctx.lab.run("h1", ["kill", "-CONT", pid], check=False))
    resume.start()
    try:
        started = time.monotonic()
        with Session(ctx.ls.stack, "h1", derive.DEPLOY_USER, ctx.ls.keys["deploy"].private_openssh,
                     pins=Pins(ctx.ls.known_hosts())) as session:
            result = session.run("true", timeout=60)
        took = time.monotonic() - started
    finally:
        resume.cancel()
        ctx.lab.run("h1", ["kill", "-CONT", pid], check=False)
    assert result.ok, result
    assert took >= LOGIND_PAUSE - 2, f"the login did not wait for logind ({took:.1f} s)"


def test_an_unreachable_host_is_an_error_and_the_others_are_still_checked(ctx, capsys):
    ctx.lab._stop("h2")
    started = time.monotonic()
    code, report, err = ctx.drift(capsys)
    assert code == 1
    assert time.monotonic() - started < 40
    assert {h: r["status"] for h, r in report["hosts"].items()} == {"gw": "clean", "h1": "clean", "h2": "error"}
    assert report["hosts"]["h2"]["error"].startswith("unreachable: could not reach h2 at 10.213.91.4 through the gateway 10.213.90.2")
    assert err.startswith("ops drift: h2: unreachable: could not reach h2")
