"""Convergence, program tier: every host gets one converge command through the gateway, triggered by its
script's hash, a change reaches exactly the hosts it concerns and no script carries a secret (the file
tier, every shipped file under its daemon's checker, is tests/test_converge_render.py)."""

from __future__ import annotations

import copy
import hashlib

import pytest

from ops.mockrun import run_stack
from render.converge import converge_script, late_names, script_digest
from render.roles import host_plan
from model import derive
from model.load import build_stack
from tests.program_runs import PROXMOX_VM, STACKS, model, raw, run

pytestmark = pytest.mark.program


COMMAND = "command:remote:Command"
BOOTSTRAP = "hypha:infra:HostBootstrap"


def _unwrap(value):
    """Mocks keep secret inputs wrapped: {sig: ..., value: ...}."""
    if isinstance(value, dict) and "value" in value and len(value) == 2:
        return value["value"]
    return value


def _command(stack: str, host: str):
    r = run(stack)
    (component,) = [c for c in r.of_type(BOOTSTRAP) if c.name == host]
    # A LAN host's component also holds its readiness probe (`<host>-ready`, tests/test_first_converge.py).
    (command,) = [c for c in r.children(component) if c.name == f"{host}-converge"]
    assert command.type == COMMAND
    return command


@pytest.mark.parametrize("stack", STACKS)
def test_every_host_is_converged_by_one_command_triggered_by_its_script_hash(stack):
    m = model(stack)
    assert {c.name for c in run(stack).of_type(BOOTSTRAP)} == set(m.hosts)
    for host in m.hosts:
        cmd = _command(stack, host)
        assert cmd.inputs["create"] == "sudo -n sh -s"
        script = converge_script(m, host)
        if late_names(script):
            # Secrets and generated keys are filled in on the way: the stdin is a secret without placeholders.
            stdin = _unwrap(cmd.inputs["stdin"])
            assert {"stdin", "triggers"} <= cmd.secret_inputs
            assert late_names(stdin) == [] and stdin.count("\n") == script.count("\n")
            assert _unwrap(cmd.inputs["triggers"])[0] == script_digest(script)
        else:
            assert cmd.inputs["stdin"] == script
            assert cmd.inputs["triggers"] == [hashlib.sha256(cmd.inputs["stdin"].encode()).hexdigest()]


@pytest.mark.parametrize("stack", STACKS)
def test_converge_goes_through_the_gateway_as_the_deploy_user_after_the_vm(stack):
    m, r = model(stack), run(stack)
    gw, gw_addr = derive.gateway_name(m), derive.gateway_address(m)
    vm_children = {c.name: {x.urn for x in r.children(c)} for c in r.of_type(PROXMOX_VM)}
    for host in m.hosts:
        cmd = _command(stack, host)
        assert "connection" in cmd.secret_inputs  # it carries the deploy key
        conn = _unwrap(cmd.inputs["connection"])
        assert conn["user"] == "deploy"
        if host == gw:
            assert conn["host"] == gw_addr and "proxy" not in conn
        else:
            assert conn["host"] == str(m.hosts[host].lan_ip)
            assert conn["proxy"]["host"] == gw_addr and conn["proxy"]["user"] == "deploy"
        assert vm_children[host] <= set(cmd.dependencies)


def test_a_change_reaches_exactly_the_hosts_it_concerns():
    base = raw("prod")
    before = {h: script_digest(converge_script(model("prod"), h)) for h in model("prod").hosts}

    one_service = copy.deepcopy(base)
    one_service["services"]["loomio"]["port"] = 3001
    changed = build_stack(one_service, "prod")
    after = {h: script_digest(converge_script(changed, h)) for h in changed.hosts}
    # The port opens on loomio, and the proxy's upstream for it moves; nobody else is touched.
    assert {h for h in before if before[h] != after[h]} == {"loomio", "web1"}

    new_key = copy.deepcopy(base)
    new_key["people"]["alice"]["keys"].append(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMXHOdLXG4lpjWMxIUrV+0ySWuv+gXfXiMd7LNq7PR6J alice-laptop"
    )
    changed = build_stack(new_key, "prod")
    assert all(script_digest(converge_script(changed, h)) != before[h] for h in changed.hosts)


def test_the_script_carries_no_secret():
    from ops.mockrun import OFFLINE_SECRETS

    r = run_stack("prod", secrets={**OFFLINE_SECRETS, "hypha-infra:deployPrivateKey": "SECRET-KEY-MATERIAL-123"})
    for cmd in r.of_type(COMMAND):
        assert "SECRET-KEY-MATERIAL-123" not in cmd.inputs["stdin"]
        assert "SECRET-KEY-MATERIAL-123" in repr(cmd.inputs["connection"])  # only here, and it is secret
        assert "connection" in cmd.secret_inputs


def test_removing_a_person_removes_their_peer_and_their_login():
    cfg = raw("staging")
    cfg["access"]["members"].remove("dave")
    m = build_stack(cfg, "staging")
    plan = host_plan(m, derive.gateway_name(m))
    wg = next(f for f in plan.files if f.path == "/etc/wireguard/wg0.conf").content
    assert model("staging").people["dave"].wireguard.public_key not in wg
    assert "/etc/ssh/authorized_keys/dave" not in {f.path for f in plan.files}
    assert "dave" not in {a.name for a in plan.people}


def test_the_dns_host_carries_the_zone_and_derives_its_serial_on_the_host():
    from render.roles import dns

    m = model("prod")
    zone = dns.zone_name(m)
    plans = {h: host_plan(m, h) for h in m.hosts}
    carriers = {h for h, p in plans.items() if dns.body_path(zone) in {f.path for f in p.files}}
    assert carriers == set(derive.hosts_with_role(m, "dns")) == {"dns"}
    plan = plans["dns"]
    assert [s.unit for s in plan.derive] == ["named"] and "bind9" in plan.packages
    script = converge_script(m, "dns")
    assert f"{dns.SERIAL_SCRIPT} {dns.body_path(zone)} {dns.live_path(zone)}" in script
    assert all(not p.derive for h, p in plans.items() if h != "dns")
