"""Program tier: the policy pack judges what the program registers; every policy fails a violating fixture and passes a good one.

Fixtures follow AWSGuard's test helpers: start from the real program's mock run (`run_stack`),
change the registered resources the way a bad change would (a key file added to a converge
script, a VM moved to another bridge), and ask the SDK's own analyzer for the verdicts
(`ops.policy_check.evaluate`). The both-ways table (tests/policy_cases.py) holds a passing and a
failing row per policy; the tests below are the cases that need more than one verdict or more than
the messages. Many violations here cannot come from config at all, because model/checks.py
refuses that config first: the pack is the second line, for code changes.
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2
from pulumi.runtime.proto import analyzer_pb2_grpc

from ops.mockrun import Run, plain
from ops.policy_check import evaluate, export_state, load_policy_config, resolve
from policy.policies import POLICIES
from policy.replacement import ALLOW_REPLACE_ENV, BASELINE_ENV
from model.load import ROOT, read_stack_config
from tests.policy_cases import (
    CASES,
    CLUSTER_FIREWALL,
    COMMAND,
    VM,
    Case,
    base_run,
    cluster_rules,
    file_of,
    fresh,
    resource,
    set_file,
    set_stdin,
    set_user_data,
    stdin_of,
    vm,
)

pytestmark = pytest.mark.program

UNKNOWN_STRING = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's "not known during preview"
POLICY_NAMES = [p.name for p in POLICIES]


# ---------------------------------------------------------------------------------------------------
# helpers (AWSGuard style: one resource changed, one policy asked; the mutations are in tests/policy_cases.py)


def verdict(run: Run, policy: str, config: dict | None = None, env: dict | None = None):
    """`policy`'s verdict on `run`, that policy evaluated alone: a policy's verdict depends on no other
    (the analyzer runs each on its own), and the whole pack per verdict cost ~25x the time; the
    whole pack is evaluated by the tests that read more than one verdict (`evaluate` below)."""
    policies = [p for p in POLICIES if p.name == policy]
    assert policies, f"no policy {policy!r} in the pack"
    report = evaluate(run, read_stack_config(run.stack), config=config, env=env, policies=policies)
    return report.verdict(policy)


def messages(run: Run, policy: str, **kw) -> list[str]:
    return [v.message for v in verdict(run, policy, **kw).violations]


def passes(run: Run, policy: str, **kw) -> bool:
    v = verdict(run, policy, **kw)
    assert v.not_applicable is None or not v.violations
    return not v.violations


@pytest.fixture
def baseline(tmp_path) -> Path:
    """The last deployment's state, as `pulumi stack export` writes it."""
    path = tmp_path / "prod-state.json"
    path.write_text(json.dumps(export_state(base_run("prod"))))
    return path


# ---------------------------------------------------------------------------------------------------
# the both-ways table: every policy passes a good run and fails a violating one


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_policy_says_what_its_table_row_expects(case: Case, tmp_path):
    run = base_run(case.stack) if case.mutate is None else fresh(case.stack)
    if case.mutate is not None:
        case.mutate(run)
    env = dict(case.env)
    if case.baseline:
        path = tmp_path / "prod-state.json"
        path.write_text(json.dumps(export_state(base_run("prod"))))
        env[BASELINE_ENV] = str(path)
    else:
        env[BASELINE_ENV] = None  # a row without a baseline judges no replacement
    v = verdict(run, case.policy, config=case.config, env=env)
    assert [x.message for x in v.violations] == list(case.expected)
    if case.passes:
        assert v.not_applicable is None, v.not_applicable  # a pass, not a policy that could not judge


def test_every_policy_has_a_passing_and_a_failing_case():
    # A policy registered without both rows fails here: the table is the policy's spec.
    assert {c.policy for c in CASES} <= set(POLICY_NAMES), "a row names a policy the pack does not have"
    missing = [
        f"{name}: no {kind} case"
        for name in POLICY_NAMES
        for kind, want in (("passing", True), ("failing", False))
        if not any(c.policy == name and c.passes == want for c in CASES)
    ]
    assert missing == []
    assert len({c.id for c in CASES}) == len(CASES), "two rows read the same"


# ---------------------------------------------------------------------------------------------------
# prod SSH only for 2-3 admins


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
    assert len(re.findall(r"authorized_keys/(?!deploy)", stdin_of(resource(run, COMMAND, "bw1")))) > 3
    assert passes(run, "prod-ssh-admins-only")


# ---------------------------------------------------------------------------------------------------
# no password login, no root login


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


def test_a_host_scraping_itself_does_not_count_as_monitored():
    # monitor1's own node_exporter listens on 10.0.1.18:9100; that file is not a scrape target.
    run = fresh("prod")
    prom = "/etc/prometheus/prometheus.yml"
    set_file(run, "monitor1", prom, file_of(run, "monitor1", prom).replace("10.0.1.18:9100", "10.0.1.98:9100"))
    assert "10.0.1.18:9100" in file_of(run, "monitor1", "/etc/default/prometheus-node-exporter")
    assert messages(run, "data-vms-protected-backed-up-monitored") == [
        "monitor1 holds data but: no monitoring host scrapes 10.0.1.18:9100"
    ]


# ---------------------------------------------------------------------------------------------------
# staging lives on the VPN


def test_staging_vms_have_no_public_address_or_bridge():
    # (that the committed staging stack passes, and prod's public VMs are not judged, is in the table)
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


def test_vm_firewalls_need_the_datacenter_firewall_on():
    # (that both committed stacks pass is in the table)
    run = fresh("prod")
    run.resources = [r for r in run.resources if r.type != CLUSTER_FIREWALL]
    (message,) = messages(run, "vm-firewalls-take-effect")
    assert "no proxmoxve:cluster/firewallLegacy:FirewallLegacy is registered with enabled: true" in message
    run = fresh("staging")
    next(r for r in run.resources if r.type == CLUSTER_FIREWALL).inputs["enabled"] = False
    assert len(messages(run, "vm-firewalls-take-effect")) == 1


def test_the_datacenter_firewall_must_not_shut_out_the_deployment_server():
    run = fresh("prod")
    rules = cluster_rules(run)
    rules.inputs["rules"] = [r for r in rules.inputs["rules"] if r["source"] != "203.0.113.50/32" or r["dport"] != "22"]
    assert messages(run, "vm-firewalls-take-effect") == [
        "the datacenter firewall would lock this stack's deployment server 203.0.113.50 out of the nodes' SSH "
        "(tcp 22); add it to proxmox.firewall.management"
    ]
    # A disabled rule admits nothing either.
    run = fresh("prod")
    for r in cluster_rules(run).inputs["rules"]:
        r["enabled"] = False
    assert len(messages(run, "vm-firewalls-take-effect")) == 2


# ---------------------------------------------------------------------------------------------------
# no replacement of a prod VM without an allow flag


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
    set_stdin(resource(run, COMMAND, "loomio"), UNKNOWN_STRING)
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
        assert len(info.policies) == len(POLICIES) == 15  # and prod-critical-alerts-not-delayed (alert waits)
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
