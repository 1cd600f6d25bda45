"""Program tier (rendered files read, no tool run): the deploy key on LAN hosts is bound to the gateway's deploy address.

Every session jumped through the bastion reaches a LAN host from the gateway; only the deploy user's
leave from the deploy address (model/derive.py deploy_address), so LAN hosts' `from=` and SSH rules
name it, and the gateway holds it and SNATs the deploy user's connections to it. The lab shows the
attack refused (tests/test_deploy_source_lab.py).
"""

from __future__ import annotations

import pytest

from render.roles.base import AUTHORIZED_KEYS_DIR

from render.roles import host_plan
from model import derive
from model.load import load_stack
from tests.test_bad_input import assert_reported, base_config, refusal

pytestmark = pytest.mark.program

STACKS = ("prod", "staging")


def _file(stack, host: str, path: str) -> str:
    return next(f.content for f in host_plan(stack, host).files if f.path == path)


@pytest.mark.parametrize("name", STACKS)
def test_the_deploy_address_is_the_lans_last_usable_address_and_no_hosts(name):
    m = load_stack(name)
    address = derive.deploy_address(m)
    assert address == str(m.network.lan_cidr.broadcast_address - 1)
    assert address not in {str(h.lan_ip) for h in m.hosts.values()} | {str(m.network.gateway)}


@pytest.mark.parametrize("name", STACKS)
def test_lan_hosts_take_the_deploy_key_and_ssh_from_the_deploy_address_not_the_gateways_own(name):
    m = load_stack(name)
    gw = derive.gateway_name(m)
    address = derive.deploy_address(m)
    for host in m.hosts:
        line = _file(m, host, f"{AUTHORIZED_KEYS_DIR}/{derive.DEPLOY_USER}")
        expected = str(m.access.deploy.source) if host == gw else address
        assert line.startswith(f'from="{expected}",restrict'), (host, line)
        if host == gw:
            continue
        nft = _file(m, host, "/etc/nftables.conf")
        # Members still jump from the gateway's own address; the deploy user's jumps from the deploy address.
        assert f"ip saddr {m.hosts[gw].lan_ip}/32 tcp dport 22 accept" in nft
        assert f"ip saddr {address}/32 tcp dport 22 accept" in nft
        assert "snat" not in nft


@pytest.mark.parametrize("name", STACKS)
def test_the_gateway_holds_the_deploy_address_and_gives_it_to_the_deploy_users_connections_alone(name):
    m = load_stack(name)
    gw = derive.gateway_name(m)
    address = derive.deploy_address(m)
    nft = _file(m, gw, "/etc/nftables.conf")
    assert f'meta skuid "deploy" ip daddr {m.network.lan_cidr} tcp dport 22 snat to {address}\n' in nft
    assert nft.count("snat") == 1
    plan = host_plan(m, gw)
    assert "hypha-deploy-address" in plan.units
    script = _file(m, gw, "/usr/local/sbin/hypha-deploy-address")
    assert f"lan={m.hosts[gw].lan_ip}\n" in script and f"address={address}\n" in script
    assert 'ip address replace "$address/32" dev "$dev"' in script
    unit = _file(m, gw, "/etc/systemd/system/hypha-deploy-address.service")
    assert "ExecStart=/usr/local/sbin/hypha-deploy-address add" in unit and "RemainAfterExit=yes" in unit


def test_a_host_on_the_deploy_address_is_refused_with_its_key_path():
    raw = base_config("prod")
    raw["hosts"]["bw1"]["lan_ip"] = "10.0.1.254"
    assert_reported(refusal("prod", raw), "hosts.bw1.lan_ip", ("10.0.1.254", "deploy address", "pick another"))


def test_a_lan_gateway_on_the_deploy_address_is_refused():
    raw = base_config("prod")
    raw["network"]["gateway"] = "10.0.1.254"
    assert_reported(refusal("prod", raw), "network.gateway", ("deploy address", "pick another"))


def test_a_lan_too_small_for_a_deploy_address_is_refused():
    raw = base_config("prod")
    raw["network"]["lan_cidr"] = "10.0.1.0/30"
    assert_reported(refusal("prod", raw), "network.lan_cidr", ("/29 or larger",))
