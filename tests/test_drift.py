"""The drift check's probe and comparison, run for real on this machine against a directory standing in for `/`.

The probe script is the one a host runs (sha256sum, stat, base64 under sh); only its root
differs (`probe_script(plan, root=...)`). Reaching hosts through the gateway is shown on lab
hosts in tests/test_drift_lab.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ops import drift
from ops.drift import Finding, HostReport, Report, compare, probe_script
from render.plan import ManagedFile, late
from render.roles import host_plan
from model.load import load_stack

pytestmark = pytest.mark.files


@pytest.fixture
def plan():
    """bw1's real plan (prod), with no units: this machine runs no systemd to ask."""
    p = host_plan(load_stack("prod"), "bw1")
    p.units = []
    return p


def converged(root: Path, plan) -> Path:
    """Write every managed file as the converge would: content, mode, owner."""
    for f in plan.files:
        path = root / f.path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.content)
        path.chmod(int(f.mode, 8))
    return root


def probe(root: Path, plan) -> HostReport:
    out = subprocess.run(["sh", "-s"], input=probe_script(plan, root=str(root)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return compare(plan, out.stdout)


def kinds(report: HostReport) -> list[tuple[str, str]]:
    return [(f.kind, f.path) for f in report.findings]


def test_a_converged_host_is_clean(tmp_path, plan):
    report = probe(converged(tmp_path, plan), plan)
    assert report.status == "clean" and report.findings == []
    assert report.checked_files == len(plan.files) > 5


def test_a_hand_edited_file_is_drift_with_a_diff_naming_it(tmp_path, plan):
    root = converged(tmp_path, plan)
    journald = root / "etc/systemd/journald.conf.d/50-hypha.conf"
    journald.write_text(journald.read_text() + "Storage=volatile\n")
    report = probe(root, plan)
    assert report.status == "drift"
    assert kinds(report) == [("file-changed", "/etc/systemd/journald.conf.d/50-hypha.conf")]
    diff = report.findings[0].diff
    assert diff.startswith("--- /etc/systemd/journald.conf.d/50-hypha.conf (desired)\n+++ /etc/systemd/journald.conf.d/50-hypha.conf (on bw1)\n")
    assert "\n+Storage=volatile\n" in diff


def test_a_changed_file_that_is_not_world_readable_is_named_without_its_lines(tmp_path, plan):
    root = converged(tmp_path, plan)
    sudoers = root / "etc/sudoers.d/90-hypha"
    sudoers.write_text(sudoers.read_text() + "mallory ALL=(ALL) NOPASSWD: ALL\n")
    report = probe(root, plan)
    [finding] = report.findings
    assert (finding.kind, finding.path, finding.diff) == ("file-changed", "/etc/sudoers.d/90-hypha", "")
    assert finding.detail == "content differs from the rendered file (mode 0440: diff not shown)"


def test_a_missing_file_and_a_loosened_mode_are_drift(tmp_path, plan):
    root = converged(tmp_path, plan)
    (root / "etc/nftables.conf").unlink()
    (root / "etc/sudoers.d/90-hypha").chmod(0o666)
    report = probe(root, plan)
    assert kinds(report) == [("file-metadata", "/etc/sudoers.d/90-hypha"), ("file-missing", "/etc/nftables.conf")] or kinds(
        report
    ) == [("file-missing", "/etc/nftables.conf"), ("file-metadata", "/etc/sudoers.d/90-hypha")]
    meta = next(f for f in report.findings if f.kind == "file-metadata")
    assert meta.detail == "is 666 root:root, should be 440 root:root"


def test_a_file_with_late_values_is_checked_for_presence_and_mode_only(tmp_path, plan):
    secret = "/etc/hypha-test/secret"
    plan.files = [f for f in plan.files if not f.late]  # only the file made here has a late value
    plan.files.append(ManagedFile(secret, f"key={late('test/secret')}\n", mode="0600"))
    root = converged(tmp_path, plan)
    # On a host it holds the real secret, which the check never has: any content is accepted...
    (root / secret.lstrip("/")).write_text("key=the real secret\n")
    report = probe(root, plan)
    assert report.status == "clean"
    assert report.notes == [f"{secret}: holds late values (test/secret); content not compared without secrets"]
    # ...but not a world-readable mode or a missing file.
    (root / secret.lstrip("/")).chmod(0o644)
    assert kinds(probe(root, plan)) == [("file-metadata", secret)]
    (root / secret.lstrip("/")).unlink()
    assert kinds(probe(root, plan)) == [("file-missing", secret)]


def test_an_undeclared_authorized_key_is_unmanaged_access(tmp_path, plan):
    root = converged(tmp_path, plan)
    stray = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOzOiPD8QgXCk39Zo/oLiLQ6NMgw1OfltR1r8oldoVBE mallory@laptop\n"
    (root / "etc/ssh/authorized_keys/mallory").write_text(stray)
    alice = root / "etc/ssh/authorized_keys/alice"
    alice.write_text(alice.read_text() + stray)
    report = probe(root, plan)
    found = {(f.kind, f.path): f.detail for f in report.findings}
    assert found[("unmanaged-key", "/etc/ssh/authorized_keys/mallory")] == "key file not in the plan (1 key(s): mallory@laptop)"
    assert found[("unmanaged-key", "/etc/ssh/authorized_keys/alice")] == "1 undeclared key line(s): mallory@laptop"
    assert ("file-changed", "/etc/ssh/authorized_keys/alice") in found
    # The findings name keys by comment, so the summary stays readable (the diff shows the line).
    assert not any("AAAAC3Nza" in f.detail for f in report.findings)


def test_keys_in_a_home_directory_are_unmanaged_access(tmp_path, plan):
    root = converged(tmp_path, plan)
    home = root / "root/.ssh"
    home.mkdir(parents=True)
    (home / "authorized_keys").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFDKnyQOjRsS7Sg2e4nzZAv2M8xMX3refXfvhnVGf/L old@admin\n")
    report = probe(root, plan)
    assert [(f.kind, f.path) for f in report.findings] == [("unmanaged-key", "/root/.ssh/authorized_keys")]
    assert "old@admin" in report.findings[0].detail


def test_a_path_the_plan_wants_gone_is_drift(tmp_path):
    p = host_plan(load_stack("prod"), "web1")
    p.units = []
    root = converged(tmp_path, p)
    (root / "etc/nginx/sites-enabled/default").write_text("server {}\n")
    assert ("should-be-absent", "/etc/nginx/sites-enabled/default") in kinds(probe(root, p))


def test_an_inactive_managed_unit_is_drift_unless_systemd_skipped_it(plan):
    plan.files = []
    plan.units = ["ssh", "systemd-timesyncd", "nftables"]
    # `systemctl show -p ActiveState -p ConditionResult` blocks, in argument order, as the probe prints them.
    out = "U ActiveState=failed\nU ConditionResult=yes\nU \nU ActiveState=inactive\nU ConditionResult=no\nU \nU ActiveState=active\nU ConditionResult=yes\nEND\n"
    report = compare(plan, out)
    assert [(f.kind, f.path, f.detail) for f in report.findings] == [("unit-inactive", "ssh", "is failed, not active")]
    assert report.notes == ["systemd-timesyncd: inactive, its start condition does not hold on this host"]


def test_the_probe_script_passes_shellcheck(tmp_path):
    # web1: files, a path that must be absent, units; plus a file with a late value.
    p = host_plan(load_stack("prod"), "web1")
    p.files.append(ManagedFile("/etc/x/secret", late("borg/x"), mode="0600"))
    script = tmp_path / "probe.sh"
    script.write_text(probe_script(p))
    out = subprocess.run(["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout


def test_a_probe_cut_short_is_an_error_not_a_clean_host(plan):
    report = compare(plan, "F - - - - /etc/nftables.conf\n")
    assert report.status == "error" and "no END line" in report.error


def test_exit_codes_error_beats_drift_beats_clean():
    clean, drifted, broken = HostReport("a"), HostReport("b", "drift", findings=[Finding("file-missing", "/x", "")]), HostReport("c", "error", "unreachable")
    assert Report("s", {"a": clean}, 0).exit_code == 0
    assert Report("s", {"a": clean, "b": drifted}, 0).exit_code == 2
    assert Report("s", {"a": clean, "b": drifted, "c": broken}, 0).exit_code == 1


def test_without_a_key_the_command_says_how_to_give_one(monkeypatch, capsys):
    monkeypatch.delenv(drift.KEY_FILE_ENV, raising=False)
    monkeypatch.delenv(drift.KEY_ENV, raising=False)
    assert drift.main(["--stack", "prod"]) == 1
    assert capsys.readouterr().err == (
        "ops drift: no deploy key: pass --key FILE, or set HYPHA_DEPLOY_KEY_FILE to a file or HYPHA_DEPLOY_KEY to the key itself\n"
    )


def test_an_unknown_host_is_refused(monkeypatch, capsys):
    monkeypatch.setenv(drift.KEY_ENV, "not used")
    assert drift.main(["--stack", "prod", "--host", "nosuch"]) == 1
    assert "--host nosuch: not a host of stack prod" in capsys.readouterr().err


def test_ops_dispatches_drift():
    out = subprocess.run(
        [os.sys.executable, "-m", "ops", "drift", "--help"], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0 and "--stack" in out.stdout and "HYPHA_DEPLOY_KEY_FILE" in out.stdout
