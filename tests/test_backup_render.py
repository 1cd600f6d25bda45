"""Backups in the file, program and bad-input tiers: every rendered borgmatic config passes Debian's
validator, the image backup job and the generated secrets are what the program registers, and broken
backup config is refused before anything is deployed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ops import restore_drill
from ops.mockrun import _mock_ed25519, _mock_password, run_stack
from render.roles import backup as rb
from render.converge import converge_script, late_names
from render.plan import LATE_MARK
from render.roles import host_plan
from model import backup as backup_model
from model import derive
from model.load import build_stack
from tests.program_runs import STACKS, child, model, run
from tests.test_bad_input import assert_reported, base_config, refusal
from tests.tools import need as _need

pytestmark = pytest.mark.files

JOB = "proxmoxve:backup/job:Job"
KEY = "tls:index/privateKey:PrivateKey"
PASSWORD = "random:index/randomPassword:RandomPassword"
COMMAND = "command:remote:Command"




def _file(stack, host: str, path: str):
    return next(f for f in host_plan(stack, host).files if f.path == path)


# --- who backs up where ----------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_every_host_that_holds_data_but_the_target_is_a_client_of_the_one_target(stack):
    m = model(stack)
    assert backup_model.target_name(m) == "backup1"
    # backup1 holds data (the repositories) but is not its own client: a copy on the same disk protects
    # nothing, the offsite copy does.
    assert backup_model.clients(m) == sorted(h for h in m.hosts if derive.holds_data(m, h) and h != "backup1")
    assert backup_model.clients(m) == ["bw1", "lists", "loomio", "monitor1"]
    for host in m.hosts:
        has_config = any(f.path == rb.BORGMATIC_CONFIG for f in host_plan(m, host).files)
        assert has_config == (host in backup_model.clients(m)), host


def test_a_declared_database_makes_its_host_hold_data_and_is_dumped_by_its_hook():
    m = model("prod")
    config = _file(m, "loomio", rb.BORGMATIC_CONFIG).content
    assert 'postgresql_databases:\n        - name: "loomio_production"' in config
    assert '"runuser -u postgres -- pg_dump"' in config
    raw = base_config("prod")
    raw["services"]["wiki"] = {"host": "web1", "port": 8088, "databases": [{"engine": "mysql", "name": "wiki"}]}
    from model.load import build_stack

    m2 = build_stack(raw, "prod")
    assert "web1" in backup_model.clients(m2)
    assert "mysql_databases:" in rb.borgmatic_config(m2, "web1")
    assert "root/.borgmatic/mysql_databases/localhost/wiki" in rb.target_config(m2, "backup1")["repositories"]["web1"]["expect"]


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


# --- program tier ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_the_image_backup_job_covers_every_vm_with_the_configured_schedule_and_prune(stack):
    m, r = model(stack), run(stack)
    (job,) = r.of_type(JOB)
    im = m.backup.images
    assert job.inputs["resourceId"] == f"hypha-{stack}-images"
    assert job.inputs["schedule"] == im.schedule == "sun 01:30"
    assert job.inputs["storage"] == "backup-hdd"
    assert job.inputs["mode"] == "snapshot" and job.inputs["compress"] == "zstd" and job.inputs["enabled"] is True
    assert job.inputs["vmids"] == [str(i) for i in sorted(h.vm_id for h in m.hosts.values())]
    want = {"keep-weekly": "2"} | ({"keep-monthly": "1"} if stack == "prod" else {})
    assert job.inputs["pruneBackups"] == want
    (provider,) = [x for x in r.resources if x.type == "pulumi:providers:proxmoxve"]
    assert job.provider.startswith(provider.urn + "::")
    (comp,) = r.of_type("hypha:infra:Backups")
    assert job.parent == comp.urn
    # After every VM exists (a dependency on the components is one on their resources).
    vms = {x.urn for x in r.of_type("proxmoxve:index/vmLegacy:VmLegacy")}
    assert len(vms) == len(m.hosts) and vms <= set(job.dependencies)


def _generated(stack: str) -> dict[str, str]:
    """Every generated secret of the run by name, as the mocks made them."""
    r = run(stack)
    out = {}
    for x in r.of_type(KEY):
        if x.name.startswith("borg-"):  # the hosts' own SSH keys: tests/test_host_keys.py
            out[x.name] = _mock_ed25519(x.name)["privateKeyOpenssh"]
    for x in r.of_type(PASSWORD):
        out[x.name] = _mock_password(x.name, int(x.inputs["length"]))
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_each_client_gets_its_own_key_and_passphrase_and_the_target_an_offsite_key(stack):
    m, r = model(stack), run(stack)
    clients = backup_model.clients(m)
    borg_keys = [x for x in r.of_type(KEY) if x.name.startswith("borg-")]  # host keys: components/host_keys.py
    assert sorted(x.name for x in borg_keys) == sorted([f"borg-ssh-{c}" for c in clients] + ["borg-ssh-offsite"])
    assert sorted(x.name for x in r.of_type(PASSWORD)) == [f"borg-passphrase-{c}" for c in clients]
    assert all(x.inputs["algorithm"] == "ED25519" for x in borg_keys)
    assert all(x.inputs["length"] >= 32 and x.inputs["special"] is False for x in r.of_type(PASSWORD))
    pub = r.exports["backup_offsite_public_key"]
    assert pub.startswith("ssh-ed25519 ") and pub == pub.strip()


@pytest.mark.parametrize("stack", STACKS)
def test_backup_secrets_are_secret_and_never_in_clear_in_any_other_input(stack):
    r = run(stack)
    secrets = _generated(stack)
    assert len(secrets) == len(backup_model.clients(model(stack))) * 2 + 1
    # A passphrase whole; a private key by its fourth line, the private part (the first lines of
    # every ED25519 key in OpenSSH form are the same header).
    clear = {n: (s.split("\n")[4] if s.startswith("-----") else s) for n, s in secrets.items()}
    for res in r.resources:
        if res.type in (KEY, PASSWORD):  # their outputs are the secrets, secret by the provider's schema
            continue
        for key, value in res.inputs.items():
            if key in res.secret_inputs:
                continue
            text = repr(value)
            for name, needle in clear.items():
                assert needle not in text, f"{res.urn}.{key} holds {name} in clear"


@pytest.mark.parametrize("stack", STACKS)
def test_the_scripts_carry_placeholders_and_the_hosts_get_the_values_on_a_secret_stdin(stack):
    import base64

    m, r = model(stack), run(stack)
    secrets = _generated(stack)
    for host in m.hosts:
        script = converge_script(m, host)
        assert not any(s in script for s in secrets.values())
        want = rb.late_names_for(m, host)
        assert [n for n in late_names(script) if n.startswith("borg/")] == sorted(want)
        cmd = next(x for x in r.of_type(COMMAND) if x.name == f"{host}-converge")
        if not want:
            continue
        assert "stdin" in cmd.secret_inputs
        stdin = cmd.inputs["stdin"]["value"]
        for name in want:
            kind, _, owner = name.removeprefix("borg/").partition("/")
            if kind == "passphrase":
                value = secrets[f"borg-passphrase-{owner}"]
            elif kind == "ssh-key" or name == "borg/offsite/ssh-key":
                value = secrets["borg-ssh-offsite" if name == "borg/offsite/ssh-key" else f"borg-ssh-{owner}"]
            else:
                value = _mock_ed25519(f"borg-ssh-{owner}")["publicKeyOpenssh"].strip()
            assert base64.b64encode(value.encode()).decode() in stdin, f"{host}: {name}"


# --- bad input -------------------------------------------------------------------------------------


def _without_target(raw):
    raw["hosts"]["backup1"]["roles"] = []


BAD = [
    ("a-backup-path-that-is-not-absolute", lambda raw: raw["backup"].__setitem__("extra_paths", {"loomio": ["etc/loomio"]}),
     "backup.extra_paths.loomio[0]", ("'etc/loomio' is not an absolute path", "write it from /")),
    ("a-data-path-that-is-not-absolute", lambda raw: raw["services"]["loomio"].__setitem__("data_paths", ["srv/loomio"]),
     "services.loomio.data_paths[0]", ("is not an absolute path", "write it from /")),
    ("a-repository-dir-that-is-not-absolute", lambda raw: raw["backup"].__setitem__("repository_dir", "srv/borg"),
     "backup.repository_dir", ("not an absolute path",)),
    ("zero-retention", lambda raw: raw["backup"].__setitem__("retention", {"daily": 0, "weekly": 0, "monthly": 0}),
     "backup.retention", ("keeps nothing", "keep at least one")),
    ("negative-retention", lambda raw: raw["backup"].__setitem__("retention", {"daily": -1}),
     "backup.retention.daily", ("greater than or equal to 0",)),
    ("a-database-with-no-dump-hook",
     lambda raw: raw["services"]["loomio"].__setitem__("databases", [{"engine": "sqlite", "name": "loomio"}]),
     "services.loomio.databases[0].engine", ("'sqlite' has no borgmatic dump hook", "supported: mariadb, mysql, postgresql")),
    ("a-client-with-no-target", _without_target,
     "backup.target", ("no backup target for the hosts that hold data", "loomio", "give a host the `backup_target` role")),
    ("a-target-that-is-not-a-host", lambda raw: raw["backup"].__setitem__("target", "backup9"),
     "backup.target", ("unknown host 'backup9'",)),
    ("a-target-without-the-role", lambda raw: raw["backup"].__setitem__("target", "loomio"),
     "backup.target", ("has no `backup_target` role",)),
    ("two-targets-and-none-named", lambda raw: raw["hosts"]["monitor1"]["roles"].append("backup_target"),
     "backup.target", ("several hosts have role `backup_target`", "name the one")),
    ("extra-paths-on-a-host-without-data", lambda raw: raw["backup"].__setitem__("extra_paths", {"web1": ["/etc"]}),
     "backup.extra_paths.web1", ("holds no data", "not a backup client")),
    ("images-that-keep-nothing", lambda raw: raw["backup"]["images"].update(keep_weekly=0, keep_monthly=0),
     "backup.images", ("keeps no image",)),
    ("an-offsite-host-key-that-is-not-a-key", lambda raw: raw["backup"]["offsite"].__setitem__("host_key", "ssh-ed25519 nope"),
     "backup.offsite.host_key", ("paste the whole .pub file line",)),
    ("an-offsite-path-that-is-not-absolute", lambda raw: raw["backup"]["offsite"].__setitem__("path", "hypha"),
     "backup.offsite.path", ("not an absolute path",)),
    ("a-quota-that-is-not-a-size", lambda raw: raw["backup"].__setitem__("storage_quota", "100 GB; rm -rf /"),
     "backup.storage_quota", ("is not a size such as 500M, 100G or 2T",)),
    ("a-per-client-quota-that-is-not-a-size", lambda raw: raw["backup"].__setitem__("storage_quotas", {"loomio": "-1G"}),
     "backup.storage_quotas.loomio", ("'-1G' is not a size",)),
    ("a-quota-for-a-host-without-a-repository", lambda raw: raw["backup"].__setitem__("storage_quotas", {"web1": "10G"}),
     "backup.storage_quotas.web1", ("holds no data", "has no repository")),
    ("quotas-that-do-not-fit-the-target", lambda raw: raw["backup"].__setitem__("storage_quota", "2T"),
     "backup.storage_quota", ("add up to", "one client could fill the target for all")),
    ("offsite-history-of-no-days", lambda raw: raw["backup"]["offsite"].__setitem__("keep_days", 0),
     "backup.offsite.keep_days", ("greater than or equal to 1",)),
    ("a-misspelt-retention-key", lambda raw: raw["backup"]["retention"].__setitem__("dayly", 7),
     "backup.retention.dayly", ("not a known key",)),
]


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("mutate, path, words", [pytest.param(m, p, w, id=i) for i, m, p, w in BAD])
def test_bad_backup_config_is_refused_with_its_key_path_before_anything_is_deployed(stack, mutate, path, words):
    raw = base_config(stack)
    mutate(raw)
    exc = refusal(stack, raw)  # also checks that no resource was registered
    assert_reported(exc, path, words)


def test_without_a_backup_section_nothing_is_backed_up_and_nothing_is_refused():
    raw = base_config("staging")
    raw.pop("backup")
    r = run_stack("staging", raw=raw)
    borg_keys = [x for x in r.of_type(KEY) if x.name.startswith("borg-")]
    assert r.of_type(JOB) == [] and borg_keys == [] and r.of_type(PASSWORD) == []
    assert "backup_offsite_public_key" not in r.exports


# --- ops restore-drill, the report ----------------------------------------------------------------


def _status(**repos) -> dict:
    base = {"ok": True, "archive": "x-2026-11-23T01:15:00", "canary_age_seconds": 3 * 3600, "files": 10,
            "bytes": 2048, "missing": [], "error": None, "last_success": 1_795_000_000}
    return {"host": "backup1", "finished": 1_795_000_000, "seconds": 12.5,
            "repositories": {name: {**base, **over} for name, over in repos.items()}}


def test_the_drill_report_lists_every_client_and_exits_0_only_when_all_passed():
    m = model("prod")
    ok = _status(**{c: {} for c in backup_model.clients(m)})
    text, code = restore_drill.report(m, ok, now=1_795_000_600)
    assert code == 0 and "4 of 4 repositories restored and checked" in text
    assert "finished 2026-11-18" in text and "(10 min ago)" in text
    for c in backup_model.clients(m):
        assert f"  {c} " in text

    bad = _status(**{c: {} for c in backup_model.clients(m) if c != "lists"},
                  lists={"ok": False, "error": "borg check failed (1): segment 12 damaged", "files": 0})
    text, code = restore_drill.report(m, bad, now=1_795_000_600)
    assert code == 1 and "3 of 4" in text and "FAILED: lists" in text and "segment 12 damaged" in text

    missing = _status(**{c: {} for c in backup_model.clients(m) if c != "bw1"})
    text, code = restore_drill.report(m, missing, now=1_795_000_600)
    assert code == 1 and "bw1" in text and "MISSING" in text

    text, code = restore_drill.report(m, None)
    assert code == 2 and "No restore drill has run on backup1" in text


def test_ops_dispatches_restore_drill_and_it_explains_itself(capsys):
    from ops.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["restore-drill", "--help"])
    assert exc.value.code == 0 and "--stack" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        restore_drill.main(["restore", "--help"])
    assert "--from" in capsys.readouterr().out
