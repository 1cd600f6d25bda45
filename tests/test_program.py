"""Program tier: both stacks run under Pulumi mocks; the resource graph, parity, access and options."""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

import pytest

from ops.mockrun import plain, run_stack
from model import derive, derive_backup as backup
from render import wire
from tests.program_runs import (
    CLUSTER_FIREWALL,
    FW_OPTIONS,
    FW_RULES,
    GATEWAY,
    PROXMOX_VM,
    SNIPPET,
    STACKS,
    VM,
    authorized_keys,
    child,
    component,
    model,
    raw,
    run,
    snippet_source,
    user_data,
    written_files,
)

pytestmark = pytest.mark.program

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("stack", STACKS)
def test_every_host_has_a_vm_a_snippet_and_a_firewall_parented_to_its_component(stack):
    r = run(stack)
    hosts = set(model(stack).hosts)
    assert {c.name for c in r.of_type(PROXMOX_VM)} == hosts
    for host in hosts:
        for type_ in (VM, SNIPPET, FW_OPTIONS, FW_RULES):
            res = child(r, host, type_)
            assert res.parent == component(r, host).urn
    # Nothing of these types exists outside a host component, but the datacenter's own rule list.
    for type_ in (VM, SNIPPET, FW_OPTIONS):
        assert len(r.of_type(type_)) == len(hosts)
    assert len(r.of_type(FW_RULES)) == len(hosts) + 1


@pytest.mark.parametrize("stack", STACKS)
def test_gateway_component_owns_the_bastion_vm(stack):
    r = run(stack)
    (gw,) = r.of_type(GATEWAY)
    gw_name = derive.gateway_name(model(stack))
    assert component(r, gw_name).parent == gw.urn
    # Every other host component hangs off the stack root, not the gateway.
    others = [c for c in r.of_type(PROXMOX_VM) if c.name != gw_name]
    assert others and all(c.parent.endswith("pulumi:pulumi:Stack::hypha-infra-" + stack) for c in others)


@pytest.mark.parametrize("stack", STACKS)
def test_components_use_hypha_type_tokens(stack):
    components = [x for x in run(stack).resources if not x.custom]
    assert components
    assert all(re.fullmatch(r"hypha:infra:[A-Z][A-Za-z]+", c.type) for c in components)


def _shape(stack: str) -> set[tuple[str, str]]:
    """(type, name) of every resource, host names included: the components built."""
    return {(r.type, r.name) for r in run(stack).resources}


def test_staging_and_prod_build_the_same_components():
    assert _shape("staging") == _shape("prod")


def test_stack_name_alone_changes_nothing_but_names():
    """No branching on the stack's name: prod's config run as another stack builds the same inputs."""
    cfg = raw("prod")
    cfg["site"]["stack"] = "qa"
    qa = run_stack("qa", raw=cfg)
    prod = run("prod")
    assert {(r.type, r.name) for r in qa.resources} == _shape("prod")

    def inputs(run_, stack):
        out = {}
        for r in run_.resources:
            items = dict(r.inputs)
            if r.type == "command:remote:Command" and r.name.endswith("-ready"):
                items.pop("triggers")  # the host's converge trigger: its own test (test_first_converge)
            elif r.type == "command:remote:Command":
                # The trigger is the script's hash, so it differs exactly where the script does.
                triggers = items.pop("triggers")
                if not isinstance(items["stdin"], dict):  # a secret stdin (late values filled) has its own test
                    assert triggers == [hashlib.sha256(items["stdin"].encode()).hexdigest()]
                # Files travel base64-encoded: decoded, a name inside one (monitoring's `stack` label) is seen too.
                stdin = items["stdin"]["value"] if isinstance(items["stdin"], dict) else items["stdin"]
                for call in reversed(wire.parse_stages(stdin)):
                    start, end = call.span
                    fields = (call.index, call.path, call.mode, call.owner, call.group, call.unit, call.action, call.check)
                    stdin = stdin[:start] + f"{fields}\n{call.content()}" + stdin[end:]
                items["stdin"] = stdin.replace(f"stack: {stack}", "stack: X")
            text = repr(sorted(items.items())).replace(f"stack {stack}", "stack X")
            text = text.replace(f"hypha-{stack}-", "hypha-X-").replace(f"'{stack}'", "'X'")
            out[(r.type, r.name)] = text
        return out

    assert inputs(qa, "qa") == inputs(prod, "prod")


@pytest.mark.parametrize("stack", STACKS)
def test_vm_inputs_come_from_the_host_catalog(stack):
    m, r = model(stack), run(stack)
    for name, h in m.hosts.items():
        vm = child(r, name, VM).inputs
        assert vm["vmId"] == h.vm_id and vm["nodeName"] == h.node and vm["name"] == name
        assert vm["cpu"]["cores"] == h.cores and vm["memory"]["dedicated"] == h.memory_mb
        assert vm["disks"][0]["size"] == h.disk_gb
        assert vm["clone"] == {
            "vmId": m.proxmox.template.vm_id,
            "nodeName": m.proxmox.template.node,
            "full": True,
            "datastoreId": h.datastore or m.proxmox.default_datastore,
        }
        assert vm["agent"]["enabled"] is True
        assert vm["onBoot"] is m.site.on_boot
        assert vm["poolId"] == m.proxmox.pool
        assert vm["tags"] == sorted(vm["tags"]) and stack in vm["tags"]
        assert vm["initialization"]["ipConfigs"][0]["ipv4"]["address"].startswith(f"{h.lan_ip}/")
        snippet = child(r, name, SNIPPET).inputs
        assert snippet["nodeName"] == h.node and snippet["contentType"] == "snippets"
        assert vm["initialization"]["userDataFileId"] == f"{m.proxmox.snippet_datastore}:snippets/{plain(snippet['sourceRaw'])['fileName']}"


def test_staging_vms_are_off_at_boot_and_prod_vms_on():
    assert all(not child(run("staging"), n, VM).inputs["onBoot"] for n in model("staging").hosts)
    assert all(child(run("prod"), n, VM).inputs["onBoot"] for n in model("prod").hosts)


def test_staging_vms_have_no_public_address_or_bridge():
    m, r = model("staging"), run("staging")
    for name in m.hosts:
        vm = child(r, name, VM).inputs
        assert [d["bridge"] for d in vm["networkDevices"]] == [m.network.lan_bridge]
        assert len(vm["initialization"]["ipConfigs"]) == 1


def test_prod_public_hosts_get_a_second_nic_routed_on_the_public_bridge():
    m, r = model("prod"), run("prod")
    public = [n for n, h in m.hosts.items() if h.public_ipv4]
    assert public
    for name in public:
        vm = child(r, name, VM).inputs
        assert [d["bridge"] for d in vm["networkDevices"]] == [m.network.lan_bridge, m.network.public.bridge]
        lan, pub = vm["initialization"]["ipConfigs"]
        assert "gateway" not in lan["ipv4"]  # default route via the public side only
        assert pub["ipv4"]["address"] == f"{m.hosts[name].public_ipv4}/24"
        assert pub["ipv4"]["gateway"] == str(m.network.public.ipv4_gateway)


def test_prod_vms_that_hold_data_are_protected_and_others_are_not():
    m, r = model("prod"), run("prod")
    data_hosts = {"bw1", "loomio", "lists", "backup1", "monitor1"}
    assert {n for n in m.hosts if derive.holds_data(m, n)} == data_hosts
    for name in m.hosts:
        vm = child(r, name, VM)
        assert vm.protect is (name in data_hosts), name
        assert vm.inputs["protection"] is (name in data_hosts), name


def test_staging_vms_are_never_protected():
    r = run("staging")
    assert not any(v.protect or v.inputs["protection"] for v in r.of_type(VM))


def test_prod_cloud_init_holds_only_the_admins_keys():
    m, r = model("prod"), run("prod")
    admin_keys = {k for a in m.access.admins for k in m.people[a].keys}
    others = {k for n, p in m.people.items() if n not in m.access.admins for k in p.keys}
    assert others, "the prod config must have non-admin people for this test to mean anything"
    for host in m.hosts:
        keys = authorized_keys(r, host)
        assert set(keys) == {*m.access.admins, "deploy"}
        people_keys = {k for user, ks in keys.items() if user != "deploy" for k in ks}
        assert people_keys == admin_keys
        document = snippet_source(child(r, host, SNIPPET))["data"]
        assert not any(k.split()[1] in document for k in others)


def test_staging_cloud_init_holds_every_members_key():
    m, r = model("staging"), run("staging")
    expected = set(m.access.members) | set(m.access.admins)
    assert expected - set(m.access.admins), "staging must have members beyond the admins"
    for host in m.hosts:
        keys = authorized_keys(r, host)
        assert set(keys) == expected | {"deploy"}
        for person in expected:
            assert keys[person] == list(m.people[person].keys)


@pytest.mark.parametrize("stack", STACKS)
def test_admins_get_sudo_and_members_do_not(stack):
    m, r = model(stack), run(stack)
    assert set(derive.login_people(m)) - set(m.access.admins) or stack == "prod"
    for host in m.hosts:
        sudoers = written_files(r, host)["/etc/sudoers.d/90-hypha"]
        assert sudoers["permissions"] == "0440"
        granted = {line.split()[0] for line in sudoers["content"].splitlines() if line and not line.startswith("#")}
        assert granted == set(m.access.admins) | {"deploy"}
        for user in user_data(r, host)["users"]:
            assert "sudo" not in user and "sudo" not in user.get("groups", [])
            assert user["lock_passwd"] is True  # no password exists to log in with


@pytest.mark.parametrize("stack", STACKS)
def test_deploy_key_is_only_usable_from_one_address(stack):
    m, r = model(stack), run(stack)
    gw = derive.gateway_name(m)
    for host in m.hosts:
        (line,) = authorized_keys(r, host)["deploy"]
        # Not the gateway's LAN address, which every member's jump comes from: its deploy address.
        source = str(m.access.deploy.source) if host == gw else derive.deploy_address(m)
        assert source != str(m.hosts[gw].lan_ip)
        assert line.startswith(f'from="{source}",restrict')
        assert line.endswith(m.access.deploy.public_key)
        # Only the bastion forwards (that is what jumping through it is).
        assert ("port-forwarding" in line) is (host == gw)


@pytest.mark.parametrize("stack", STACKS)
def test_cloud_init_locks_out_passwords_and_root(stack):
    m, r = model(stack), run(stack)
    for host in m.hosts:
        doc = user_data(r, host)
        assert doc["ssh_pwauth"] is False and doc["disable_root"] is True
        dropin = written_files(r, host)["/etc/ssh/sshd_config.d/10-hypha.conf"]
        assert Path(dropin["path"]).name < "50-cloud-init.conf"
        assert "PasswordAuthentication no" in dropin["content"]
        assert "PermitRootLogin no" in dropin["content"]
        assert "qemu-guest-agent" in doc["packages"]


@pytest.mark.parametrize("stack", STACKS)
def test_firewall_drops_inbound_and_allows_ssh_only_from_the_gateway(stack):
    m, r = model(stack), run(stack)
    gw = derive.gateway_name(m)
    for host in m.hosts:
        opts = child(r, host, FW_OPTIONS).inputs
        assert opts["enabled"] is True and opts["inputPolicy"] == "DROP"
        assert opts["vmId"] == m.hosts[host].vm_id
        rules = child(r, host, FW_RULES).inputs["rules"]
        assert all(rule["type"] == "in" and rule["action"] == "ACCEPT" for rule in rules)
        ssh = [rule for rule in rules if rule["dport"] == "22"]
        if host == gw:
            assert ssh == [] or all("source" not in rule for rule in ssh)
            assert any(rule["dport"] == "22" for rule in rules)
        else:
            # The backup target also lets in each borg client (forced to `borg serve`).
            clients = backup.clients(m) if host == backup.target_name(m) else []
            # Members jump from the gateway's LAN address; the deploy user's jumps leave from its deploy address.
            jumps = [f"{m.hosts[gw].lan_ip}/32", f"{derive.deploy_address(m)}/32"]
            assert [rule["source"] for rule in ssh] == jumps + [f"{m.hosts[h].lan_ip}/32" for h in clients]
        # A firewall rule needs the VM to exist first.
        assert child(r, host, VM).urn in child(r, host, FW_RULES).dependencies


@pytest.mark.parametrize("stack", STACKS)
def test_the_gateways_lan_nic_may_send_from_its_deploy_address_and_its_lan_address_only(stack):
    m, r = model(stack), run(stack)
    gw = derive.gateway_name(m)
    sets = [res for res in r.resources if res.type == "proxmoxve:firewall/ipsetLegacy:IpsetLegacy"]
    assert [s.inputs["name"] for s in sets] == ["ipfilter-net0"]
    (ipset,) = sets
    assert ipset.inputs["vmId"] == m.hosts[gw].vm_id and ipset.inputs["nodeName"] == m.hosts[gw].node
    assert [c["name"] for c in ipset.inputs["cidrs"]] == [str(m.hosts[gw].lan_ip), derive.deploy_address(m)]
    assert child(r, gw, VM).urn in ipset.dependencies


@pytest.mark.parametrize("stack", STACKS)
def test_the_datacenter_firewall_is_registered_enabled_and_admits_only_management(stack):
    m, r = model(stack), run(stack)
    (fw,) = r.of_type(CLUSTER_FIREWALL)
    assert fw.parent == next(x for x in r.resources if x.type == "hypha:infra:ClusterFirewall").urn
    assert fw.inputs["enabled"] is True and fw.inputs["inputPolicy"] == "DROP"
    (rules,) = [x for x in r.of_type(FW_RULES) if x.parent == fw.parent]
    assert "nodeName" not in rules.inputs and "vmId" not in rules.inputs  # the cluster-level list
    admitted = {(rule["dport"], rule["source"]) for rule in rules.inputs["rules"]}
    assert all(rule["type"] == "in" and rule["action"] == "ACCEPT" for rule in rules.inputs["rules"])
    assert {("8006", f"{m.access.deploy.source}/32"), ("22", f"{m.access.deploy.source}/32")} <= admitted
    assert ("22", "10.0.1.18/32") not in admitted and ("8006", "10.0.1.18/32") in admitted  # pve-exporter: API only


def test_both_stacks_declare_the_same_datacenter_firewall():
    """One firewall for the node: a stack that differs would undo the other's rules on every `up`."""
    def declared(stack):
        r = run(stack)
        fw = r.of_type(CLUSTER_FIREWALL)[0]
        rules = [x for x in r.of_type(FW_RULES) if x.parent == fw.parent]
        return fw.inputs, [x.inputs for x in rules]

    assert declared("prod") == declared("staging")
    assert raw("prod")["proxmox"]["firewall"] == raw("staging")["proxmox"]["firewall"]


def test_service_ports_come_from_the_catalog():
    m, r = model("prod"), run("prod")
    proxy_ip = m.hosts["web1"].lan_ip
    rules = child(r, "loomio", FW_RULES).inputs["rules"]
    assert {"proto": "tcp", "dport": "3000", "source": f"{proxy_ip}/32"}.items() <= next(
        x for x in rules if x["dport"] == "3000"
    ).items()
    # Staging's Prometheus is for people on the VPN (`reach: vpn`): from the gateway, where VPN
    # traffic enters the LAN, and from the monitoring host's own probe; not from the other VMs.
    # (Prod publishes it behind a login, monitoring.ui: proxy.)
    s = model("staging")
    ui = [x for x in child(run("staging"), "monitor1", FW_RULES).inputs["rules"] if x["dport"] == "9090"]
    assert sorted(x["source"] for x in ui) == sorted(f"{s.hosts[h].lan_ip}/32" for h in ("gateway", "monitor1"))
    # A service left at the default `reach: lan` is open to the whole LAN.
    raw_lan = raw("staging")
    raw_lan["services"]["prometheus"].pop("reach")
    lan = [x for x in child(run_stack("staging", raw_lan), "monitor1", FW_RULES).inputs["rules"] if x["dport"] == "9090"]
    assert str(s.network.lan_cidr) in [x["source"] for x in lan]
    assert {x["dport"] for x in child(r, "web1", FW_RULES).inputs["rules"] if "source" not in x} == {"80", "443"}


def test_every_ignore_changes_entry_names_the_upstream_issue():
    """Each ignore_changes entry is preceded by a comment naming an owner/repo#issue."""
    found = 0
    for path in (ROOT / "components").glob("*.py"):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.keyword) and node.arg == "ignore_changes":
                assert isinstance(node.value, ast.List), f"{path.name}: ignore_changes must be a literal list"
                for elt in node.value.elts:
                    found += 1
                    above = "\n".join(lines[max(0, elt.lineno - 6) : elt.lineno - 1])
                    assert re.search(r"[\w.-]+/[\w.-]+#\d+", above), f"{path.name}:{elt.lineno} has no upstream issue"
    assert found, "no ignore_changes found: the test would pass vacuously"


def test_vms_ignore_later_user_data_changes():
    for vm in run("prod").of_type(VM):
        assert vm.ignore_changes == ["initialization.userDataFileId"]


@pytest.mark.parametrize("stack", STACKS)
def test_exports_hosts_public_urls_and_the_jump_command(stack):
    m, r = model(stack), run(stack)
    assert set(r.exports["hosts"]) == set(m.hosts)
    gw_addr = derive.gateway_address(m)
    for name, h in r.exports["hosts"].items():
        assert h["lan_ip"] == str(m.hosts[name].lan_ip)
        assert gw_addr in h["ssh"]
    assert r.exports["ssh_jump"].startswith(f"ssh -J <you>@{gw_addr} ")
    urls = {f"https://{d}/" for s in m.services.values() if s.public for d in s.domains}
    assert set(r.exports["public_urls"]) == urls and urls


def test_prod_is_reached_on_the_public_gateway_and_staging_over_the_vpn():
    assert derive.gateway_address(model("prod")) == str(model("prod").hosts["gateway"].public_ipv4)
    assert derive.gateway_address(model("staging")) == str(model("staging").hosts["gateway"].lan_ip)


def test_every_resource_uses_the_stack_provider():
    r = run("prod")
    (provider,) = [x for x in r.resources if x.type == "pulumi:providers:proxmoxve"]
    assert provider.inputs["endpoint"] == model("prod").proxmox.endpoint
    for res in r.resources:
        if res.custom and res.type.startswith("proxmoxve:"):
            assert res.provider.startswith(provider.urn + "::"), res.urn


def test_members_get_no_login_where_only_admins_log_in():
    """site.ssh_access decides: a members list on an admins-only stack grants nothing."""
    cfg = raw("prod")
    cfg["access"]["members"] = ["carol", "dave", "erin"]
    r = run_stack("prod", raw=cfg)
    for vm in r.of_type(PROXMOX_VM):
        assert set(authorized_keys(r, vm.name)) == {"alice", "bob", "deploy"}


def test_secrets_stay_secret_and_never_enter_the_model():
    from ops.mockrun import OFFLINE_SECRETS

    r = run("prod")
    (provider,) = [x for x in r.resources if x.type == "pulumi:providers:proxmoxve"]
    assert "apiToken" in provider.secret_inputs
    for res in r.resources:
        for key, value in res.inputs.items():
            if key in res.secret_inputs:
                continue
            for secret in OFFLINE_SECRETS.values():
                assert secret not in repr(value), f"{res.urn}.{key} holds a secret in clear"
    dumped = model("prod").model_dump_json()
    assert not any(secret in dumped for secret in OFFLINE_SECRETS.values())
