"""Host tier: the gateway forwards VPN source addresses into the LAN only when they came out of the tunnel.

The attack: a host on the internet side sends packets whose source is a VPN member's address to the
gateway's public interface. Before, the forward rule matched the source alone and rp_filter was loose,
so they reached LAN hosts masqueraded as the gateway, the address LAN hosts trust.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import pytest

from lab.hosts import Lab, available, layout, stop_process
from lab.stack import boot_and_converge, lab_stack
from lab.subnets import subnets
from model import derive
from tests.test_vpn_lab import MEMBER, _probe, _start_member_tunnel, _tunnels

pytestmark = pytest.mark.lab

HOSTS = ("gw", "h1")
NETS = subnets("tspoof")
FRONT, LAN, VPN_CIDR = NETS.front, NETS.lan, NETS.vpn
ATTACKER_ADDRESS = str(FRONT[66])
MEMBER_ADDRESS = str(FRONT[50])
# A UDP port h1 does not serve: the sniffer sees frames before h1's own firewall drops them, so
# "nothing arrived" means the gateway did not forward, not that h1 dropped it.
PORT = 40999
LISTEN_SECONDS = 6.0

# Counts frames on h1's LAN interface that carry the marker, for a bounded time (AF_PACKET sees
# everything the gateway forwards, before h1's nftables).
SNIFFER = r"""
import socket, sys, time
marker = sys.argv[1].encode()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind(("lan0", 0))
s.settimeout(0.2)
print("listening", flush=True)
seen = 0
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        frame = s.recv(65535)
    except socket.timeout:
        continue
    if marker in frame:
        seen += 1
print(seen, flush=True)
"""

SENDER = r"""
import socket, sys, time
src, dst, port, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if src:
    s.bind((src, 0))
for _ in range(5):
    s.sendto(marker, (dst, port))
    time.sleep(0.2)
"""


@pytest.fixture(scope="module")
def spoof(tmp_path_factory):
    ok, why = available()
    if not ok:
        pytest.skip(f"lab unavailable: {why}")
    ls = lab_stack("staging", hosts=HOSTS, members=(MEMBER,), front=FRONT, lan=LAN, vpn=VPN_CIDR)
    tmp = tmp_path_factory.mktemp("spoof")
    with Lab(NETS.prefix, layout(HOSTS[0], HOSTS[1:], front=str(FRONT), lan=str(LAN)), front=str(FRONT), lan=str(LAN)) as lab:
        results = boot_and_converge(lab, ls)
        for h, r in results.items():
            assert r.ok, f"{h}: {r.stdout}{r.stderr}"
        gw_public = re.search(r"wireguard public key (\S+)", results["gw"].stdout).group(1)
        attacker = lab.add_client("mallory", ATTACKER_ADDRESS)
        # The attacker borrows a member's VPN address and routes the LAN at the gateway's public side.
        peer = next(p for p in derive.vpn_peers(ls.stack) if p.person == MEMBER)
        lab.netns_exec(attacker, ["ip", "address", "add", f"{peer.address}/32", "dev", "front0"])
        lab.netns_exec(attacker, ["ip", "route", "add", str(LAN), "via", ls.front_ip["gw"], "dev", "front0"])
        client = lab.add_client(MEMBER, MEMBER_ADDRESS)
        vpn = {"lab": lab, "ls": ls, "client": client, "tmp": tmp}
        try:
            yield {**vpn, "attacker": attacker, "spoofed": str(peer.address),
                   "start": lambda: _start_member_tunnel(lab, ls, client, gw_public, tmp)}
        finally:
            for proc in _tunnels:
                stop_process(proc)
            _tunnels.clear()


def _arrivals(spoof, sender_ns: str, source: str) -> int:
    """Frames with a fresh marker that h1's LAN interface saw while `sender_ns` sent 5 datagrams to h1."""
    lab = spoof["lab"]
    h1 = str(spoof["ls"].stack.hosts["h1"].lan_ip)
    marker = f"tspoof-{uuid.uuid4().hex}"
    sniffer = subprocess.Popen(
        ["ip", "netns", "exec", lab.netns("h1"), sys.executable, "-c", SNIFFER, marker, str(LISTEN_SECONDS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert sniffer.stdout.readline().strip() == "listening", sniffer.stderr.read()
        lab.netns_exec(sender_ns, [sys.executable, "-c", SENDER, source, h1, str(PORT), marker], timeout=30)
        out, err = sniffer.communicate(timeout=LISTEN_SECONDS + 10)
    finally:
        stop_process(sniffer)
    assert sniffer.returncode == 0, err
    return int(out.strip())


def test_every_host_gets_the_base_network_sysctls(spoof):
    for host in HOSTS:
        shown = spoof["lab"].run(host, ["sysctl", "-n", "net.ipv4.conf.all.rp_filter", "net.ipv4.conf.lan0.rp_filter",
                                        "net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.lan0.send_redirects",
                                        "net.ipv4.conf.all.log_martians", "net.ipv4.tcp_syncookies"]).stdout.split()
        assert shown == ["1", "1", "0", "0", "1", "1"], host
        assert spoof["lab"].run(host, ["systemctl", "is-failed", "systemd-sysctl"], check=False).stdout.strip() != "failed"


def test_a_vpn_source_address_from_the_internet_side_does_not_reach_a_lan_host(spoof):
    assert _arrivals(spoof, spoof["attacker"], spoof["spoofed"]) == 0


def test_the_forward_rule_alone_refuses_it_when_rp_filter_is_loosened(spoof):
    """Two layers, each enough: with the gateway's reverse-path filter off, nftables still refuses."""
    lab = spoof["lab"]
    keys = ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.front0.rp_filter")
    lab.run("gw", ["sysctl", "-q", "-w", *(f"{k}=0" for k in keys)])
    try:
        assert _arrivals(spoof, spoof["attacker"], spoof["spoofed"]) == 0
    finally:
        lab.run("gw", ["sysctl", "-q", "-w", *(f"{k}=1" for k in keys)])


def test_a_real_vpn_peer_still_reaches_the_lan_host(spoof):
    spoof["start"]()
    lab, h1 = spoof["lab"], str(spoof["ls"].stack.hosts["h1"].lan_ip)
    for _ in range(50):  # the handshake takes a moment
        if _probe(lab, spoof["client"], h1):
            break
    else:
        pytest.fail("no TCP to h1:22 over the VPN")
    assert _arrivals(spoof, spoof["client"], "") >= 5
