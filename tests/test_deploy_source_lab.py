"""Host tier: a leaked deploy key is no use to a member who can jump through the bastion (issue 13).

LAN hosts accept the deploy key only from the gateway's deploy address, which only the deploy user's
own jumped sessions leave from (nftables SNAT by socket owner). A member logged in on the gateway
opens a direct-tcpip channel to a LAN host and offers the deploy key there: refused. The real
converge (the deploy user jumping, as ops/remote.py and the Pulumi command do) passes. The same
attack against the previous design (`from=` the gateway's LAN address) is shown to succeed.
"""

from __future__ import annotations

import io

import paramiko
import pytest

from lab.hosts import available
from lab.stack import converged_lab
from lab.subnets import subnets
from ops.remote import CHANNEL_TIMEOUT, converge
from render.roles.base import AUTHORIZED_KEYS_DIR
from model import derive

pytestmark = pytest.mark.lab

HOSTS = ("gw", "h1")
MEMBER = "dave"
NETS = subnets("tdep")
FRONT, LAN, VPN_CIDR = NETS.front, NETS.lan, NETS.vpn
DEPLOY_KEYS = f"{AUTHORIZED_KEYS_DIR}/{derive.DEPLOY_USER}"

@pytest.fixture(scope="module")
def dep():
    ok, why = available()
    if not ok:
        pytest.skip(f"lab unavailable: {why}")
    # Staging: members have a login on the bastion, so they can jump.
    with converged_lab(NETS.prefix, "staging", HOSTS, (MEMBER,), FRONT, LAN, VPN_CIDR) as (lab, ls):
        yield {"lab": lab, "ls": ls}


def _jump(dep, jumper: str, user: str, target: str = "h1") -> str:
    """Log in on the bastion as `jumper` with its own key, open a direct-tcpip channel to the target's
    SSH (what -J does) and, over it, try to log in there as `user` with `user`'s key. From this process,
    in the root namespace ("the internet"); the attacker does not care about host keys, so neither leg
    pins one."""
    keys = dep["ls"].keys
    stack = dep["ls"].stack
    pkey = lambda who: paramiko.Ed25519Key.from_private_key(io.StringIO(keys[who].private_openssh))  # noqa: E731
    bastion = paramiko.SSHClient()
    bastion.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    bastion.connect(derive.gateway_address(stack), username=jumper, pkey=pkey(jumper), timeout=20,
                    allow_agent=False, look_for_keys=False)
    try:
        channel = bastion.get_transport().open_channel(
            "direct-tcpip", (str(stack.hosts[target].lan_ip), 22), ("127.0.0.1", 0), timeout=CHANNEL_TIMEOUT)
        inner = paramiko.Transport(channel)
        try:
            inner.start_client(timeout=20)
            try:
                inner.auth_publickey(user, pkey(user))
            except paramiko.AuthenticationException:
                return "refused"
            session = inner.open_session()
            session.exec_command("id -un")
            return "accepted " + session.makefile().read().decode().strip()
        finally:
            inner.close()
    finally:
        bastion.close()


def test_lan_hosts_accept_the_deploy_key_only_from_the_gateways_deploy_address(dep):
    stack = dep["ls"].stack
    address = derive.deploy_address(stack)
    assert address == str(LAN.broadcast_address - 1) and address != str(stack.hosts["gw"].lan_ip)
    line = dep["lab"].run("h1", ["cat", DEPLOY_KEYS]).stdout
    assert line.startswith(f'from="{address}",restrict '), line
    # The gateway holds it, and only the deploy user's connections are given it.
    assert f"inet {address}/32 " in dep["lab"].run("gw", ["ip", "-o", "-4", "address", "show"]).stdout
    uid = dep["lab"].run("gw", ["id", "-u", "deploy"]).stdout.strip()  # nft resolves the name when it loads
    rule = f"meta skuid {uid} ip daddr {LAN} tcp dport 22 snat to {address}"
    assert rule in dep["lab"].run("gw", ["nft", "list", "ruleset"]).stdout


def test_the_deploy_key_through_a_members_jump_is_refused_on_a_lan_host(dep):
    # The member's own login there works through the same jump: the channel opened, sshd answered.
    assert _jump(dep, MEMBER, MEMBER) == f"accepted {MEMBER}"
    assert _jump(dep, MEMBER, "deploy") == "refused"


def test_the_deploy_users_own_jump_and_the_real_converge_pass(dep):
    assert _jump(dep, "deploy", "deploy") == "accepted deploy"
    ls = dep["ls"]
    again = converge(ls.stack, "h1", ls.keys["deploy"].private_openssh, script=ls.script("h1"))
    assert again.ok and "done: 0 file(s) changed, 0 removed" in again.stdout, again.stdout + again.stderr


def test_the_same_attack_succeeds_against_the_previous_design(dep):
    """`from=` the gateway's LAN address (before this change): the member's jump gets in as deploy."""
    lab, stack = dep["lab"], dep["ls"].stack
    before = lab.run("h1", ["cat", DEPLOY_KEYS]).stdout
    previous = before.replace(f'from="{derive.deploy_address(stack)}"', f'from="{stack.hosts["gw"].lan_ip}"', 1)
    assert previous != before
    lab.run("h1", ["sh", "-c", f"cat >{DEPLOY_KEYS}"], input=previous)
    try:
        assert _jump(dep, MEMBER, "deploy") == "accepted deploy"
    finally:
        lab.run("h1", ["sh", "-c", f"cat >{DEPLOY_KEYS}"], input=before)
    assert _jump(dep, MEMBER, "deploy") == "refused"
