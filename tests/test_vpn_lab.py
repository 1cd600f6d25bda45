"""Host tier: staging is reached over the gateway's WireGuard VPN, by members, and only while they are members."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.hosts import Lab, available, layout, stop_process
from lab.stack import boot_and_converge, lab_stack
from lab.subnets import subnets
from ops.remote import converge
from model import derive
from model.load import build_stack

pytestmark = pytest.mark.lab

HOSTS = ("gw", "h1")
MEMBER = "dave"
# Ranges of its own, so nothing another lab module left behind (neighbour entries, connections)
# can meet this lab's addresses.
NETS = subnets("hvp")
FRONT, LAN, VPN_CIDR = NETS.front, NETS.lan, NETS.vpn
CLIENT_ADDRESS = str(FRONT[50])


def _probe(lab: Lab, ns: str, address: str, port: int = 22, timeout: float = 2.0) -> bool:
    code = f"import socket,sys;s=socket.socket();s.settimeout({timeout});sys.exit(0 if s.connect_ex(({address!r},{port}))==0 else 1)"
    return lab.netns_exec(ns, [sys.executable, "-c", code], check=False, timeout=timeout + 10).returncode == 0


@pytest.fixture(scope="module")
def vpn(tmp_path_factory):
    ok, why = available()
    if not ok:
        pytest.skip(f"lab unavailable: {why}")
    ls = lab_stack("staging", hosts=HOSTS, members=(MEMBER,), front=FRONT, lan=LAN, vpn=VPN_CIDR)
    tmp = tmp_path_factory.mktemp("vpn")
    with Lab("hvp", layout(HOSTS[0], HOSTS[1:], front=str(FRONT), lan=str(LAN)), front=str(FRONT), lan=str(LAN)) as lab:
        results = boot_and_converge(lab, ls)
        for h, r in results.items():
            assert r.ok, f"{h}: {r.stdout}{r.stderr}"
        gw_public = re.search(r"wireguard public key (\S+)", results["gw"].stdout).group(1)
        client = lab.add_client(MEMBER, CLIENT_ADDRESS)
        try:
            yield {"lab": lab, "ls": ls, "client": client, "gw_public": gw_public, "tmp": tmp,
                   "start": lambda: _start_member_tunnel(lab, ls, client, gw_public, tmp)}
        finally:
            for proc in _tunnels:
                stop_process(proc)
            _tunnels.clear()


_tunnels: list[subprocess.Popen] = []


def _start_member_tunnel(lab: Lab, ls, client: str, gw_public: str, tmp: Path) -> None:
    """The member's laptop: wireguard-go in the client namespace, configured like their real device."""
    stack = ls.stack
    peer = next(p for p in derive.vpn_peers(stack) if p.person == MEMBER)
    key_file = tmp / "dave.key"
    key_file.write_text(ls.wireguard[MEMBER][0] + "\n")
    key_file.chmod(0o600)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", client, "wireguard-go", "-f", "wg0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    _tunnels.append(proc)
    for _ in range(50):
        if lab.netns_exec(client, ["ip", "link", "show", "wg0"], check=False).returncode == 0:
            break
        time.sleep(0.1)
    vpn = stack.network.vpn
    lab.netns_exec(client, ["wg", "set", "wg0", "private-key", str(key_file), "peer", gw_public,
                            "endpoint", vpn.endpoint, "allowed-ips", f"{vpn.cidr},{stack.network.lan_cidr}",
                            "persistent-keepalive", "1"])
    lab.netns_exec(client, ["ip", "address", "add", f"{peer.address}/{vpn.cidr.prefixlen}", "dev", "wg0"])
    lab.netns_exec(client, ["ip", "link", "set", "wg0", "up"])
    lab.netns_exec(client, ["ip", "route", "add", str(stack.network.lan_cidr), "dev", "wg0"])


def _ssh_as_member(vpn, address: str) -> subprocess.CompletedProcess:
    """Log in as the member straight over the tunnel, from their laptop's namespace."""
    code = (
        "import io,sys,paramiko\n"
        "k=paramiko.Ed25519Key.from_private_key(io.StringIO(sys.stdin.read()))\n"
        "c=paramiko.SSHClient(); c.set_missing_host_key_policy(paramiko.AutoAddPolicy())\n"
        f"c.connect({address!r}, username={MEMBER!r}, pkey=k, timeout=10, allow_agent=False, look_for_keys=False)\n"
        "_,o,_=c.exec_command('id -un'); print(o.read().decode().strip()); c.close()\n"
    )
    return vpn["lab"].netns_exec(vpn["client"], [sys.executable, "-c", code],
                                 input=vpn["ls"].keys[MEMBER].private_openssh, check=False, timeout=60)


def test_without_the_tunnel_the_lan_is_out_of_reach(vpn):
    h1 = str(vpn["ls"].stack.hosts["h1"].lan_ip)
    assert not _probe(vpn["lab"], vpn["client"], h1)


def test_a_members_peer_reaches_a_staging_host_through_the_gateway(vpn):
    vpn["start"]()
    lab, stack = vpn["lab"], vpn["ls"].stack
    h1 = str(stack.hosts["h1"].lan_ip)
    for _ in range(50):  # the handshake takes a moment
        if _probe(lab, vpn["client"], h1):
            break
        time.sleep(0.2)
    else:
        pytest.fail("no TCP to h1:22 over the VPN")
    shown = lab.run("gw", ["wg", "show", "wg0", "latest-handshakes"]).stdout
    peer_key = vpn["ls"].wireguard[MEMBER][1]
    assert peer_key in shown and not re.search(rf"{re.escape(peer_key)}\s+0$", shown, re.M)
    login = _ssh_as_member(vpn, h1)
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == MEMBER


def test_removing_the_member_removes_their_peer_and_their_way_in(vpn):
    lab, ls = vpn["lab"], vpn["ls"]
    raw = copy.deepcopy(ls.raw)
    raw["access"]["members"].remove(MEMBER)
    without = build_stack(raw, "staging")
    for host in HOSTS:
        result = converge(without, host, ls.keys["deploy"].private_openssh)
        assert result.ok, result.stderr
    assert ls.wireguard[MEMBER][1] not in lab.run("gw", ["wg", "show", "wg0", "peers"]).stdout
    h1 = str(without.hosts["h1"].lan_ip)
    assert not _probe(lab, vpn["client"], h1, timeout=3.0)
    assert lab.run("h1", ["sh", "-c", "getent shadow dave | cut -d: -f8"]).stdout.strip() == "1"
