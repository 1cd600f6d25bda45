"""Backups in the file tier: every rendered borgmatic config passes Debian's validator, every shell step
shellcheck, every schedule systemd's calendar (the program tier is tests/test_backup_model.py)."""

from __future__ import annotations

import json
import subprocess

import pytest

from render.roles import backup as rb
from render.converge import converge_script
from render.plan import LATE_MARK
from render.roles import host_plan
from model import derive_backup as backup_model
from model import derive
from model.load import build_stack
from tests.program_runs import STACKS, model
from tests.test_bad_input import base_config
from tests.tools import need as _need

pytestmark = pytest.mark.files


def _file(stack, host: str, path: str):
    return next(f for f in host_plan(stack, host).files if f.path == path)


# --- file tier -------------------------------------------------------------------------------------


def _configs():
    for stack in STACKS:
        m = model(stack)
        for host in backup_model.clients(m):
            yield pytest.param(m, host, id=f"{stack}-{host}")


@pytest.mark.parametrize("m, host", list(_configs()))
def test_every_rendered_borgmatic_config_passes_debians_validator(tmp_path, m, host):
    """Debian 12's borgmatic is 1.7.7, whose validator is validate-borgmatic-config (the converge runs
    the same one, check="borgmatic"); `borgmatic config validate` only came with 1.7.15."""
    f = _file(m, host, rb.BORGMATIC_CONFIG)
    assert f.check == "borgmatic" and f.mode == "0600" and not f.late
    path = tmp_path / "config.yaml"
    path.write_text(f.content)
    result = subprocess.run([_need("validate-borgmatic-config", "borgmatic"), "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_debians_validator_rejects_a_broken_borgmatic_config(tmp_path):
    good = _file(model("prod"), "loomio", rb.BORGMATIC_CONFIG).content
    path = tmp_path / "config.yaml"
    path.write_text(good.replace("    lock_wait: 300", "    lock_wiat: 300"))
    result = subprocess.run([_need("validate-borgmatic-config", "borgmatic"), "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


def test_the_converge_checks_borgmatic_configs_and_private_keys_with_the_real_tools():
    script = converge_script(model("prod"), "loomio")
    assert 'borgmatic) validate-borgmatic-config -c "$2"' in script
    assert 'ssh_private_key) ssh-keygen -y -f "$2"' in script
    assert _file(model("prod"), "loomio", rb.CLIENT_KEY).check == "ssh_private_key"


def test_the_client_hook_and_every_shell_step_pass_shellcheck(tmp_path):
    m = model("prod")
    hook = tmp_path / "backup-hook"
    hook.write_text(_file(m, "loomio", rb.HOOK).content)
    steps = tmp_path / "steps.sh"
    # The finish and prepare steps run inside the converge script, which defines log().
    steps.write_text("#!/bin/sh\nlog() { echo \"$*\"; }\n" + "\n".join(
        [*host_plan(m, "loomio").finish, *host_plan(m, "backup1").prepare]) + "\n")
    for path in (hook, steps):
        result = subprocess.run([_need("shellcheck", "shellcheck"), "-s", "sh", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_the_hook_writes_the_canary_and_the_last_success_metric(tmp_path):
    content = _file(model("prod"), "loomio", rb.HOOK).content
    content = content.replace(rb.STATE_DIR, str(tmp_path / "state")).replace(
        "/var/lib/prometheus/node-exporter", str(tmp_path / "textfile"))
    hook = tmp_path / "hook"
    hook.write_text(content)
    subprocess.run(["sh", str(hook), "canary"], check=True)
    subprocess.run(["sh", str(hook), "success"], check=True)
    assert int((tmp_path / "state/canary/canary").read_text()) > 1_700_000_000
    prom = (tmp_path / "textfile/hypha_backup.prom").read_text()
    assert 'hypha_backup_last_success_timestamp_seconds{repository="loomio"} ' in prom
    assert subprocess.run(["sh", str(hook), "nonsense"], capture_output=True).returncode == 2


@pytest.mark.parametrize("stack", STACKS)
def test_every_timer_schedule_is_a_valid_calendar_event(stack):
    m = model(stack)
    analyze = _need("systemd-analyze", "systemd")
    for host in [backup_model.target_name(m), *backup_model.clients(m)]:
        for f in host_plan(m, host).files:
            if f.path.endswith(".timer"):
                for line in f.content.splitlines():
                    if line.startswith("OnCalendar="):
                        event = line.split("=", 1)[1]
                        r = subprocess.run([analyze, "calendar", event], capture_output=True, text=True)
                        assert r.returncode == 0, f"{host} {f.path}: {event}: {r.stderr}"


def test_the_target_tool_and_its_config_parse():
    m = model("prod")
    tool = _file(m, "backup1", rb.TARGET_TOOL)
    assert tool.check == "python" and tool.mode == "0755"
    compile(tool.content, rb.TARGET_TOOL, "exec")
    cfg = json.loads(_file(m, "backup1", rb.TARGET_CONFIG).content)
    assert cfg["retention"] == {"daily": 7, "weekly": 4, "monthly": 3}
    assert sorted(cfg["repositories"]) == backup_model.clients(m)
    assert cfg["repositories"]["loomio"]["expect"] == [
        "root/.borgmatic/postgresql_databases/localhost/loomio_production", "srv/loomio"]
    assert cfg["offsite"]["host"] == "borg.example.net"
    # The quota the metrics report is the one borg serve enforces (borg's decimal units).
    assert cfg["repositories"]["loomio"]["quota_bytes"] == 100 * 10**9
    assert cfg["offsite"]["keep_days"] == 30


def test_the_target_only_lets_each_clients_key_run_append_only_borg_serve_on_its_own_repository_within_its_quota():
    raw = base_config("prod")
    raw["backup"]["storage_quotas"] = {"loomio": "150G"}
    m = build_stack(raw, "prod")
    keys = _file(m, "backup1", rb.AUTHORIZED_KEYS)
    lines = [line for line in keys.content.splitlines() if not line.startswith("#")]
    assert len(lines) == len(backup_model.clients(m))
    for client, line in zip(backup_model.clients(m), lines):
        quota = "150G" if client == "loomio" else "100G"
        assert line.startswith(
            f'from="{m.hosts[client].lan_ip}",command="borg serve --append-only --restrict-to-repository '
            f'/srv/borg/{client} --storage-quota {quota}",restrict ')
        assert LATE_MARK.findall(line) == [f"borg/ssh-pubkey/{client}"]
    # sshd lets the borg account in on the target only.
    assert f" {rb.BORG_USER}" in _file(m, "backup1", "/etc/ssh/sshd_config.d/10-hypha.conf").content.split("AllowUsers")[1].split("\n")[0]
    assert rb.BORG_USER not in _file(m, "loomio", "/etc/ssh/sshd_config.d/10-hypha.conf").content.split("AllowUsers")[1].split("\n")[0]


@pytest.mark.parametrize("stack", STACKS)
def test_the_target_accepts_ssh_from_each_client_and_nothing_else_new(stack):
    m = model(stack)
    rules = derive.inbound_rules(m, "backup1")
    ssh = sorted(r.source for r in rules if r.port == 22)
    jumps = [f"{m.hosts['gateway'].lan_ip}/32", f"{derive.deploy_address(m)}/32"]  # members', the deploy's
    assert ssh == sorted([*jumps, *(f"{m.hosts[h].lan_ip}/32" for h in backup_model.clients(m))])
    for client in backup_model.clients(m):  # and clients open nothing for backups
        assert [r.source for r in derive.inbound_rules(m, client) if r.port == 22] == jumps
    nft = _file(m, "backup1", "/etc/nftables.conf").content
    for client in backup_model.clients(m):
        assert f'ip saddr {m.hosts[client].lan_ip}/32 tcp dport 22 accept comment "borg from {client}"' in nft


