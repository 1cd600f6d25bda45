"""Backups in the program and bad-input tiers: who backs up where, the image backup job and the
generated secrets are what the program registers, broken backup config is refused before anything is
deployed, and the restore drill's report (the file tier, every rendered file under its checker, is
tests/test_backup_render.py)."""

from __future__ import annotations

import pytest

from ops import restore_drill
from ops.mockrun import _mock_ed25519, _mock_password, run_stack
from render.roles import backup as rb
from render.converge import converge_script, late_names
from render.roles import host_plan
from model import derive_backup as backup_model
from model import derive
from model.load import build_stack
from tests.program_runs import STACKS, model, run
from tests.test_bad_input import assert_reported, base_config, refusal

pytestmark = pytest.mark.program


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
