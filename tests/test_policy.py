"""Program tier: the policy pack judges what the program registers; every policy fails a violating fixture and passes a good one.

Fixtures follow AWSGuard's test helpers: start from the real program's mock run (`run_stack`),
change the registered resources the way a bad change would (a key file added to a converge
script, a VM moved to another bridge), and ask the SDK's own analyzer for the verdicts
(`ops.policy_check.evaluate`). Many violations here cannot come from config at all, because
model/checks.py refuses that config first: the pack is the second line, for code changes.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import select
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2
from pulumi.runtime.proto import analyzer_pb2_grpc

from ops.mockrun import Registered, Run, plain, run_stack
from ops.policy_check import evaluate, export_state, load_policy_config, resolve
from policy.policies import ALLOW_REPLACE_ENV, BASELINE_ENV, POLICIES
from policy.view import script_files
from model.load import ROOT, read_stack_config

VM = "proxmoxve:index/vmLegacy:VmLegacy"
SNIPPET = "proxmoxve:index/fileLegacy:FileLegacy"
COMMAND = "command:remote:Command"
BACKUP_JOB = "proxmoxve:backup/job:Job"
UNKNOWN_STRING = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's "not known during preview"


# ---------------------------------------------------------------------------------------------------
# helpers (AWSGuard style: one resource changed, one policy asked)


@lru_cache(maxsize=None)
def _base(stack: str) -> Run:
    return run_stack(stack, raw=read_stack_config(stack))


def fresh(stack: str) -> Run:
    """A private copy of the stack's mock run, to change freely."""
    return copy.deepcopy(_base(stack))


def verdict(run: Run, policy: str, config: dict | None = None, env: dict | None = None):
    report = evaluate(run, read_stack_config(run.stack), config=config, env=env)
    return report.verdict(policy)


def messages(run: Run, policy: str, **kw) -> list[str]:
    return [v.message for v in verdict(run, policy, **kw).violations]


def passes(run: Run, policy: str, **kw) -> bool:
    v = verdict(run, policy, **kw)
    assert v.not_applicable is None or not v.violations
    return not v.violations


def resource(run: Run, type_: str, host: str) -> Registered:
    """The resource of `type_` inside host `host`'s component (ProxmoxVm or HostBootstrap)."""
    return next(
        r for r in run.resources
        if r.type == type_ and r.parent_name == host and (type_ != COMMAND or r.name == f"{host}-converge")
    )


def _stdin(cmd: Registered) -> str:
    value = cmd.inputs["stdin"]
    return value["value"] if isinstance(value, dict) else value


def _set_stdin(cmd: Registered, script: str) -> None:
    if isinstance(cmd.inputs["stdin"], dict):  # a secret on the wire: keep it one
        cmd.inputs["stdin"]["value"] = script
    else:
        cmd.inputs["stdin"] = script


def set_file(run: Run, host: str, path: str, content: str | None) -> None:
    """Change (or add, or with None remove) one file in the host's converge script, as a code change would."""
    cmd = resource(run, COMMAND, host)
    script = _stdin(cmd)
    block = re.compile(rf"^(PIECES=1 )?stage \d+ {re.escape(shlex.quote(path))} .*?\nHYPHA_EOF\n", re.M | re.S)
    new = "" if content is None else (
        f"stage 999 {shlex.quote(path)} 0644 root root - reload - <<'HYPHA_EOF'\n"
        f"{base64.encodebytes(content.encode()).decode()}HYPHA_EOF\n"
    )
    if block.search(script):
        script = block.sub(lambda _m: new, script, count=1)
    else:
        script = script.replace("\n# Files an earlier converge managed", f"\n{new}\n# Files an earlier converge managed", 1)
    _set_stdin(cmd, script)


def file_of(run: Run, host: str, path: str) -> str:
    return script_files(_stdin(resource(run, COMMAND, host)))[path].content


def set_user_data(run: Run, host: str, edit) -> None:
    import yaml

    snippet = resource(run, SNIPPET, host)
    source = plain(snippet.inputs["sourceRaw"])  # the secret's wrapper stays: edited in place
    doc = yaml.safe_load(source["data"])
    edit(doc)
    source["data"] = "#cloud-config\n" + yaml.safe_dump(doc)


def vm(run: Run, host: str) -> Registered:
    return resource(run, VM, host)


# ---------------------------------------------------------------------------------------------------
# prod SSH only for 2-3 admins


def test_prod_ssh_is_limited_to_admins():
    assert passes(fresh("prod"), "prod-ssh-admins-only")
    run = fresh("prod")
    dave = read_stack_config("prod")["people"]["dave"]["keys"][0]
    set_file(run, "loomio", "/etc/ssh/authorized_keys/dave", dave + "\n")
    assert messages(run, "prod-ssh-admins-only") == [
        "loomio: dave can log in but is not in access.admins; prod logins are for admins only (site.ssh_access: admins)"
    ]


def test_prod_needs_two_or_three_admins():
    run = fresh("prod")
    set_file(run, "loomio", "/etc/ssh/authorized_keys/bob", None)
    # cloud-init writes the key files too: a login dropped from one but not the other still logs in.
    assert passes(run, "prod-ssh-admins-only", config={"prod-ssh-admins-only": {"minAdmins": 2}})
    set_user_data(run, "loomio", lambda doc: doc.update(
        write_files=[f for f in doc["write_files"] if f["path"] != "/etc/ssh/authorized_keys/bob"]))
    assert messages(run, "prod-ssh-admins-only") == [
        "loomio: 1 people can log in (alice); prod needs between 2 and 3 admins (access.admins)"
    ]
    # The bounds are policy config: a pack config allowing one admin passes the same run.
    assert passes(run, "prod-ssh-admins-only", config={"prod-ssh-admins-only": {"minAdmins": 1}})


def test_a_key_bound_to_a_forced_command_is_a_service_not_a_login():
    run = fresh("prod")
    borg = file_of(run, "backup1", "/etc/ssh/authorized_keys/borg")
    assert 'command="borg serve --append-only' in borg  # every client's key: borg serve, nothing else
    assert passes(run, "prod-ssh-admins-only")
    # The same key without its forced command is a shell for `borg`.
    set_file(run, "backup1", "/etc/ssh/authorized_keys/borg", re.sub(r'command="[^"]*",', "", borg))
    assert messages(run, "prod-ssh-admins-only") == [
        "backup1: borg can log in but is not in access.admins; prod logins are for admins only (site.ssh_access: admins)",
    ]


def test_staging_members_are_not_judged_by_the_prod_login_rule():
    run = fresh("staging")
    assert len(re.findall(r"authorized_keys/(?!deploy)", _stdin(resource(run, COMMAND, "bw1")))) > 3
    assert passes(run, "prod-ssh-admins-only")


# ---------------------------------------------------------------------------------------------------
# no password login, no root login


def test_password_login_in_an_sshd_file_is_refused():
    assert passes(fresh("prod"), "no-password-or-root-login")
    run = fresh("prod")
    dropin = "/etc/ssh/sshd_config.d/10-hypha.conf"
    set_file(run, "bw1", dropin, file_of(run, "bw1", dropin).replace("PasswordAuthentication no", "PasswordAuthentication yes"))
    assert messages(run, "no-password-or-root-login") == [
        f"converge: {dropin}: `PasswordAuthentication yes`",
        "converge: no sshd file says `PasswordAuthentication no` (Debian's default lets it in)",
    ]


def test_root_login_in_an_extra_sshd_file_is_refused():
    run = fresh("staging")
    set_file(run, "dns", "/etc/ssh/sshd_config.d/99-debug.conf", "PermitRootLogin prohibit-password\n")
    assert messages(run, "no-password-or-root-login") == [
        "converge: /etc/ssh/sshd_config.d/99-debug.conf: `PermitRootLogin prohibit-password`"
    ]


def test_cloud_init_must_not_allow_passwords_or_root():
    run = fresh("prod")

    def loosen(doc):
        doc["ssh_pwauth"] = True
        doc["disable_root"] = False
        doc["users"][0]["lock_passwd"] = False

    set_user_data(run, "lists", loosen)
    found = messages(run, "no-password-or-root-login")
    assert found == [
        "cloud-init: ssh_pwauth is True; it must be false",
        "cloud-init: disable_root is false; root must not log in",
        "cloud-init: user alice gets a password; logins are by key only",
    ]
    assert all(v.urn.endswith("::lists-user-data") for v in verdict(run, "no-password-or-root-login").violations)


# ---------------------------------------------------------------------------------------------------
# every host's SSH identity is the program's, and every SSH leg pins it


def test_every_ssh_leg_pins_a_host_key_and_every_snippet_carries_the_programs_keys():
    assert passes(fresh("prod"), "ssh-host-keys-pinned") and passes(fresh("staging"), "ssh-host-keys-pinned")


def test_a_converge_leg_without_a_pinned_host_key_is_refused():
    run = fresh("prod")
    cmd = resource(run, COMMAND, "loomio")
    plain(cmd.inputs["connection"])["proxy"].pop("hostKey")
    found = verdict(run, "ssh-host-keys-pinned").violations
    assert [v.message for v in found] == [
        "the proxy to 203.0.113.12 pins no ssh-ed25519 host key: without `host_key` the command provider accepts "
        "whatever answers (components/host_keys.py makes the pins)"
    ]
    assert found[0].urn == cmd.urn


def test_a_snippet_that_lets_the_vm_make_its_own_host_keys_is_refused():
    run = fresh("prod")
    set_user_data(run, "lists", lambda doc: doc.pop("ssh_keys"))
    assert messages(run, "ssh-host-keys-pinned") == [
        "cloud-init: the VM's host keys must be the program's (`ssh_keys` with ed25519_private and "
        "ed25519_public, `ssh_deletekeys: true`); a key the VM makes itself is pinned nowhere"
    ]


# ---------------------------------------------------------------------------------------------------
# the deploy key only on the deploy user, bound to the deploy host's address


def test_the_deploy_key_is_bound_to_the_deploy_host():
    assert passes(fresh("prod"), "deploy-key-bound")
    assert passes(fresh("staging"), "deploy-key-bound")
    run = fresh("prod")
    path = "/etc/ssh/authorized_keys/deploy"
    set_file(run, "gateway", path, file_of(run, "gateway", path).replace('from="203.0.113.50"', 'from="0.0.0.0/0"'))
    set_file(run, "web1", path, re.sub(r'from="[^"]*",', "", file_of(run, "web1", path)))
    assert messages(run, "deploy-key-bound") == [
        "gateway: the deploy key (converge) is accepted from 0.0.0.0/0, not only 203.0.113.50",
        "web1: the deploy key (converge) has no from= option; bind it to 10.0.1.254",
    ]


def test_the_deploy_key_on_a_lan_host_is_not_accepted_from_the_gateways_own_address():
    # Every member's jumped session arrives from the gateway's LAN address: the previous design.
    run = fresh("prod")
    path = "/etc/ssh/authorized_keys/deploy"
    set_file(run, "bw1", path, file_of(run, "bw1", path).replace('from="10.0.1.254"', 'from="10.0.1.12"'))
    assert messages(run, "deploy-key-bound") == [
        "bw1: the deploy key (converge) is accepted from 10.0.1.12, not only 10.0.1.254",
    ]


def test_the_deploy_key_is_on_no_other_account():
    run = fresh("prod")
    deploy = read_stack_config("prod")["access"]["deploy"]["public_key"]
    path = "/etc/ssh/authorized_keys/alice"
    set_file(run, "loomio", path, file_of(run, "loomio", path) + deploy + "\n")
    assert messages(run, "deploy-key-bound") == [
        "loomio: the deploy key is in /etc/ssh/authorized_keys/alice (converge); it belongs only in /etc/ssh/authorized_keys/deploy"
    ]


# ---------------------------------------------------------------------------------------------------
# every prod VM that holds data is protected, backed up and monitored


def _data_hosts(run: Run) -> list[str]:
    from model import derive
    from model.load import build_stack

    stack = build_stack(read_stack_config(run.stack), run.stack)
    return [h for h in sorted(stack.hosts) if derive.holds_data(stack, h)]


def test_every_prod_data_vm_is_protected_backed_up_and_monitored():
    run = fresh("prod")
    assert _data_hosts(run) == ["backup1", "bw1", "lists", "loomio", "monitor1"]
    assert passes(run, "data-vms-protected-backed-up-monitored")


def test_a_data_vm_missing_any_of_the_three_is_named():
    run = fresh("prod")
    run.resources = [r for r in run.resources if r.type != BACKUP_JOB]
    vm(run, "loomio").inputs["protection"] = False
    vm(run, "loomio").protect = False
    set_file(run, "lists", "/etc/borgmatic/config.yaml", None)
    prom = "/etc/prometheus/prometheus.yml"
    set_file(run, "monitor1", prom, file_of(run, "monitor1", prom).replace("10.0.1.13:9100", "10.0.1.99:9100"))
    found = messages(run, "data-vms-protected-backed-up-monitored")
    assert found == [
        "backup1 holds data but: no proxmoxve:backup/job:Job includes vm id 1007",
        "bw1 holds data but: no proxmoxve:backup/job:Job includes vm id 1003; no monitoring host scrapes 10.0.1.13:9100",
        "lists holds data but: no proxmoxve:backup/job:Job includes vm id 1004; its converge holds no borgmatic config",
        "loomio holds data but: Proxmox protection is off (site.protect_data_vms); the VM resource is not `protect`ed "
        "in Pulumi; no proxmoxve:backup/job:Job includes vm id 1005",
        "monitor1 holds data but: no proxmoxve:backup/job:Job includes vm id 1008",
    ]


def test_the_borg_target_is_backed_up_by_its_offsite_copy():
    run = fresh("prod")
    for unit in ("service", "timer"):
        set_file(run, "backup1", f"/etc/systemd/system/hypha-borg-offsite.{unit}", None)
    assert messages(run, "data-vms-protected-backed-up-monitored") == [
        "backup1 holds data but: its converge has no offsite copy (backup.offsite)"
    ]


def test_a_host_scraping_itself_does_not_count_as_monitored():
    # monitor1's own node_exporter listens on 10.0.1.18:9100; that file is not a scrape target.
    run = fresh("prod")
    prom = "/etc/prometheus/prometheus.yml"
    set_file(run, "monitor1", prom, file_of(run, "monitor1", prom).replace("10.0.1.18:9100", "10.0.1.98:9100"))
    assert "10.0.1.18:9100" in file_of(run, "monitor1", "/etc/default/prometheus-node-exporter")
    assert messages(run, "data-vms-protected-backed-up-monitored") == [
        "monitor1 holds data but: no monitoring host scrapes 10.0.1.18:9100"
    ]


def test_staging_data_vms_need_no_protection():
    assert passes(fresh("staging"), "data-vms-protected-backed-up-monitored")


# ---------------------------------------------------------------------------------------------------
# staging lives on the VPN


def test_staging_vms_have_no_public_address_or_bridge():
    assert passes(fresh("staging"), "staging-vpn-only")
    assert passes(fresh("prod"), "staging-vpn-only")  # prod VMs with public addresses are not staging's business
    run = fresh("staging")
    web1 = vm(run, "web1")
    web1.inputs["networkDevices"].append({"bridge": "vmbr0", "model": "virtio", "firewall": True})
    web1.inputs["initialization"]["ipConfigs"].append(
        {"ipv4": {"address": "203.0.113.11/24", "gateway": "203.0.113.1"}, "ipv6": {"address": "2001:db8:1::11/64"}}
    )
    assert messages(run, "staging-vpn-only") == [
        "staging VM on bridge vmbr0; staging VMs sit on the LAN bridge vmbr3 only",
        "staging VM has address 203.0.113.11/24 outside the LAN 10.0.2.0/24; staging is reached over the VPN",
        "staging VM has IPv6 address 2001:db8:1::11/64; staging has no public address",
    ]
    assert {v.urn for v in verdict(run, "staging-vpn-only").violations} == {web1.urn}


# ---------------------------------------------------------------------------------------------------
# the datacenter firewall

CLUSTER_FIREWALL = "proxmoxve:cluster/firewallLegacy:FirewallLegacy"
FW_RULES = "proxmoxve:firewall/rulesLegacy:RulesLegacy"


def _cluster_rules(run: Run) -> Registered:
    fw = next(r for r in run.resources if r.type == CLUSTER_FIREWALL)
    return next(r for r in run.resources if r.type == FW_RULES and r.parent == fw.parent)


def test_vm_firewalls_need_the_datacenter_firewall_on():
    assert passes(fresh("prod"), "vm-firewalls-take-effect")
    assert passes(fresh("staging"), "vm-firewalls-take-effect")
    run = fresh("prod")
    run.resources = [r for r in run.resources if r.type != CLUSTER_FIREWALL]
    (message,) = messages(run, "vm-firewalls-take-effect")
    assert "no proxmoxve:cluster/firewallLegacy:FirewallLegacy is registered with enabled: true" in message
    run = fresh("staging")
    next(r for r in run.resources if r.type == CLUSTER_FIREWALL).inputs["enabled"] = False
    assert len(messages(run, "vm-firewalls-take-effect")) == 1


def test_the_datacenter_firewall_must_not_shut_out_the_deployment_server():
    run = fresh("prod")
    rules = _cluster_rules(run)
    rules.inputs["rules"] = [r for r in rules.inputs["rules"] if r["source"] != "203.0.113.50/32" or r["dport"] != "22"]
    assert messages(run, "vm-firewalls-take-effect") == [
        "the datacenter firewall would lock this stack's deployment server 203.0.113.50 out of the nodes' SSH "
        "(tcp 22); add it to proxmox.firewall.management"
    ]
    # A disabled rule admits nothing either.
    run = fresh("prod")
    for r in _cluster_rules(run).inputs["rules"]:
        r["enabled"] = False
    assert len(messages(run, "vm-firewalls-take-effect")) == 2


# ---------------------------------------------------------------------------------------------------
# capacity and ids


def test_vms_must_fit_their_node():
    assert passes(fresh("prod"), "node-capacity")
    run = fresh("prod")
    vm(run, "loomio").inputs["memory"]["dedicated"] = 40960.0
    vm(run, "backup1").inputs["disks"][0]["size"] = 2000.0
    assert messages(run, "node-capacity") == [
        "node kvm1: VMs ask for 51200 memory_mb but it offers 45056",
        "node kvm1: VMs ask for 2000 storage.hdd but it offers 1800",
    ]


def test_vm_ids_stay_in_the_stacks_range():
    assert passes(fresh("prod"), "vm-ids-in-range")
    run = fresh("prod")
    vm(run, "bw1").inputs["vmId"] = 8003.0  # a staging id in prod: the stacks would collide on the node
    assert messages(run, "vm-ids-in-range") == ["vm id 8003.0 is outside this stack's range 1000-1999 (site.vm_ids)"]


# ---------------------------------------------------------------------------------------------------
# DNS, TLS and mail


ZONE = "/etc/bind/hypha/hypha.coop.zone"


def test_every_public_service_has_dns_and_tls():
    assert passes(fresh("prod"), "public-services-dns-tls")
    assert passes(fresh("staging"), "public-services-dns-tls")
    run = fresh("prod")
    zone = file_of(run, "dns", ZONE)
    set_file(run, "dns", ZONE, "\n".join(line for line in zone.splitlines() if not line.startswith("loomio ")) + "\n")
    site = "/etc/nginx/sites-enabled/hypha-lists.conf"
    set_file(run, "web1", site, file_of(run, "web1", site).replace("ssl_certificate ", "#ssl_certificate "))
    assert messages(run, "public-services-dns-tls") == [
        "service lists: no reverse proxy serves lists.hypha.coop on 443 with a certificate it asks the ACME CA for",
        "service loomio: loomio.hypha.coop has no A, AAAA or CNAME record in any zone a dns host serves",
    ]


def test_the_mail_domain_has_spf_and_dmarc():
    assert passes(fresh("prod"), "mail-spf-dmarc")
    assert passes(fresh("staging"), "mail-spf-dmarc")
    run = fresh("prod")
    zone = file_of(run, "dns", ZONE)
    zone = zone.replace('"v=spf1 mx -all"', '"v=spf1 mx +all"')
    zone = "\n".join(line for line in zone.splitlines() if not line.startswith("_dmarc")) + "\n"
    set_file(run, "dns", ZONE, zone)
    assert messages(run, "mail-spf-dmarc") == [
        "hypha.coop: SPF `v=spf1 mx +all` does not end in -all or ~all, so anyone may send as the domain",
        "hypha.coop: 0 DMARC records (TXT v=DMARC1 at _dmarc.hypha.coop); exactly one is needed",
    ]


# ---------------------------------------------------------------------------------------------------
# no replacement of a prod VM without an allow flag


@pytest.fixture
def baseline(tmp_path) -> Path:
    """The last deployment's state, as `pulumi stack export` writes it."""
    path = tmp_path / "prod-state.json"
    path.write_text(json.dumps(export_state(_base("prod"))))
    return path


def test_replacing_a_prod_vm_needs_an_explicit_allow(baseline):
    assert passes(fresh("prod"), "prod-vm-no-replacement", env={BASELINE_ENV: str(baseline)})
    run = fresh("prod")
    vm(run, "loomio").inputs["vmId"] = 1015.0
    vm(run, "bw1").inputs["clone"]["vmId"] = 9001.0
    env = {BASELINE_ENV: str(baseline)}
    assert messages(run, "prod-vm-no-replacement", env=env) == [
        "prod VM bw1: clone changed, which replaces the VM; if that is intended, run with HYPHA_ALLOW_REPLACE=bw1",
        "prod VM loomio: vmId changed, which replaces the VM; if that is intended, run with HYPHA_ALLOW_REPLACE=loomio",
    ]
    assert passes(run, "prod-vm-no-replacement", env={**env, ALLOW_REPLACE_ENV: "loomio,bw1"})
    assert messages(run, "prod-vm-no-replacement", env=env, config={"prod-vm-no-replacement": {"allowReplace": ["bw1"]}}) == [
        "prod VM loomio: vmId changed, which replaces the VM; if that is intended, run with HYPHA_ALLOW_REPLACE=loomio",
    ]


def test_an_ignored_change_or_an_update_is_no_replacement(baseline):
    run = fresh("prod")
    # The snippet id is in ignore_changes (bpg/terraform-provider-proxmox#1636): the provider never sees it.
    vm(run, "loomio").inputs["initialization"]["userDataFileId"] = "local:snippets/other.yaml"
    vm(run, "loomio").inputs["memory"]["dedicated"] = 8192.0  # an in-place update
    assert passes(run, "prod-vm-no-replacement", env={BASELINE_ENV: str(baseline)})


def test_a_prod_vm_gone_from_the_program_is_a_replacement(baseline):
    run = fresh("prod")
    old = vm(run, "lists")
    run.resources.remove(old)
    assert messages(run, "prod-vm-no-replacement", env={BASELINE_ENV: str(baseline)}) == [
        "prod VM lists: its resource is gone (deleted, or renamed: a new URN is a new VM); "
        "if that is intended, run with HYPHA_ALLOW_REPLACE=lists"
    ]


def test_without_a_baseline_the_replacement_rule_says_it_cannot_judge(monkeypatch):
    monkeypatch.delenv(BASELINE_ENV, raising=False)
    v = verdict(fresh("prod"), "prod-vm-no-replacement")
    assert v.violations == [] and "no baseline" in v.not_applicable


# ---------------------------------------------------------------------------------------------------
# levels per stack, preview unknowns, the pack as the engine runs it


def test_levels_are_mandatory_on_prod_and_advisory_on_staging():
    prod = resolve(load_policy_config("prod"))
    staging = resolve(load_policy_config("staging"))
    assert {lvl.value for lvl, _ in prod.values()} == {"mandatory"}
    assert {lvl.value for lvl, _ in staging.values()} == {"advisory"}
    # No config at all: every policy blocks.
    assert {lvl.value for lvl, _ in resolve({}).values()} == {"mandatory"}
    # A policy's own entry wins over `all`.
    assert resolve({"all": "advisory", "vm-ids-in-range": "mandatory"})["vm-ids-in-range"][0].value == "mandatory"


def test_a_staging_violation_is_reported_but_does_not_block():
    run = fresh("staging")
    vm(run, "bw1").inputs["vmId"] = 1003.0
    report = evaluate(run, read_stack_config("staging"))
    assert [(v.level, v.message) for v in report.verdict("vm-ids-in-range").violations] == [
        ("advisory", "vm id 1003.0 is outside this stack's range 8000-8999 (site.vm_ids)")
    ]
    assert report.mandatory_violations == []
    prod_levels = evaluate(run, read_stack_config("staging"), config=load_policy_config("prod"))
    assert [v.level for v in prod_levels.mandatory_violations] == ["mandatory"]


def test_a_value_unknown_during_preview_is_reported_not_crashed_on():
    run = fresh("prod")
    _set_stdin(resource(run, COMMAND, "loomio"), UNKNOWN_STRING)
    found = verdict(run, "no-password-or-root-login").violations
    assert [(v.level, v.message) for v in found] == [
        ("advisory", "can't run policy 'no-password-or-root-login' from policy pack 'hypha-infra@v0.0.1' during "
                     "preview: string value at .stdin can't be known during preview")
    ]


def test_the_pack_serves_its_policies_as_the_engine_starts_it():
    # `pulumi preview --policy-pack policy` runs `python __main__.py` in policy/ and reads a port on stdout.
    proc = subprocess.Popen([sys.executable, "__main__.py"], cwd=ROOT / "policy", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the pack printed no port within 60 s"
        line = proc.stdout.readline()
        assert line.strip().isdigit(), (line, proc.stderr.read() if proc.poll() is not None else "")
        port = int(line)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            info = analyzer_pb2_grpc.AnalyzerStub(channel).GetAnalyzerInfo(empty_pb2.Empty(), timeout=10)
        assert info.name == "hypha-infra"
        assert [p.name for p in info.policies] == [p.name for p in POLICIES]
        assert len(info.policies) == len(POLICIES) == 13  # 12, and dmarc-enforced-only-when-signed (issue 15)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_offline_plan_prints_verdicts_and_fails_on_a_mandatory_violation(baseline, monkeypatch, capsys):
    from ops import plan

    # Every prod VM's id moved since the baseline: a mandatory violation on prod.
    state = json.loads(baseline.read_text())
    for r in state["deployment"]["resources"]:
        if r["type"] == VM:
            r["inputs"]["vmId"] += 100
    baseline.write_text(json.dumps(state))
    monkeypatch.setenv(BASELINE_ENV, str(baseline))
    monkeypatch.delenv(ALLOW_REPLACE_ENV, raising=False)
    assert plan.main(["--stack", "prod"]) == 3
    out = capsys.readouterr().out
    assert "prod-vm-no-replacement                   mandatory  8 violation(s)" in out
    assert "MANDATORY: prod VM loomio: vmId changed, which replaces the VM" in out
    assert "FAILED: a mandatory policy is violated" in out
