"""The host-tier lab itself: separate hosts with real systemd and sshd, the network the converge tests rely on, clean teardown."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import hosts as labmod
from lab.hosts import Lab, LabError, LabHost, layout
from lab.subnets import subnets

OK, WHY = labmod.available()
pytestmark = [pytest.mark.lab, pytest.mark.skipif(not OK, reason=WHY)]

ROOT = Path(__file__).resolve().parent.parent
# Each lab in this file has its own prefix and ranges (lab/subnets.py), so they may overlap in time with
# each other and with a developer's `python -m lab up` (the demo lab's ranges).
FRONT, LAN = str(subnets("tlab").front), str(subnets("tlab").lan)


def _leftovers(prefix: str) -> list[str]:
    """Anything of lab `prefix` still on this machine, found without asking lab.hosts."""
    found = []
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    found += [f"netns {n}" for n in names if n.startswith(prefix + "-")]
    lab_dir = str(labmod.BASE_DIR / prefix)
    with open("/proc/self/mountinfo") as fh:
        found += [f"mount {line.split()[4]}" for line in fh if line.split()[4].startswith(lab_dir)]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"systemd-nspawn") and any(a.startswith(lab_dir.encode()) for a in argv):
            found.append(f"nspawn pid {pid}")
    if subprocess.run(["ip", "link", "show", f"{prefix}-up"], capture_output=True).returncode == 0:
        found.append(f"link {prefix}-up")
    found += [f"propagate dir {p}" for p in labmod.NSPAWN_PROPAGATE.glob(f"{prefix}-*")]
    if Path(lab_dir).exists():
        found.append(f"dir {lab_dir}")
    return found


def _routes(net: str) -> list[dict]:
    out = subprocess.run(["ip", "-j", "-4", "route", "show"], capture_output=True, text=True).stdout
    return [r for r in json.loads(out or "[]") if r.get("dst") == net]


@pytest.fixture(scope="module")
def lab():
    the_lab = Lab("tlab", layout("gw", ("h1", "h2"), front=FRONT, lan=LAN), front=FRONT, lan=LAN)
    started = time.monotonic()
    the_lab.up()
    print(f"\nlab: 3 hosts up in {time.monotonic() - started:.2f} s (prepare {the_lab.timings['prepare']:.2f} s)")
    yield the_lab
    the_lab.down()
    print(f"\nlab: 3 hosts down in {the_lab.timings['down']:.2f} s")


def _h(lab: Lab, name: str) -> LabHost:
    return lab.hosts[name]


def test_each_host_has_its_own_hostname(lab):
    for name in lab.hosts:
        assert lab.run(name, "hostname").stdout.strip() == name
        assert lab.run(name, ["cat", "/etc/hostname"]).stdout.strip() == name


def test_a_file_written_in_one_hosts_etc_is_seen_nowhere_else(lab):
    marker = "/etc/hypha-lab-marker"
    lab.run("h1", f"echo h1 > {marker}")
    assert lab.run("h1", ["cat", marker]).stdout.strip() == "h1"
    for other in ("gw", "h2"):
        assert lab.run(other, ["test", "-e", marker], check=False).returncode == 1
    assert not Path(marker).exists()


def test_systemd_is_pid_1_and_the_system_is_up(lab):
    for name in lab.hosts:
        assert lab.run(name, ["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
        state = lab.run(name, ["systemctl", "is-system-running"], check=False).stdout.strip()
        assert state in ("running", "degraded"), (name, state)


def test_hosts_start_like_fresh_vms(lab):
    # list-unit-files takes ~1.5 s per host: ask all hosts at once.
    with concurrent.futures.ThreadPoolExecutor() as pool:
        listed = dict(zip(lab.hosts, pool.map(
            lambda name: lab.run(name, "systemctl list-unit-files --state=enabled --no-legend | cut -d' ' -f1"),
            lab.hosts)))
    machine_ids = set()
    for name in lab.hosts:
        enabled = listed[name].stdout.split()
        assert "ssh.service" in enabled
        assert not [u for u in enabled if u.endswith(".timer") or u.startswith("cloud-")], enabled
        # Disabled, not masked: converging a host enables these.
        states = lab.run(name, ["systemctl", "is-enabled", *labmod.DISABLE], check=False).stdout.split()
        assert states == ["disabled"] * len(labmod.DISABLE)
        for hidden in labmod.HIDE:
            assert lab.run(name, ["test", "-e", f"/{hidden}"], check=False).returncode == 1
        assert lab.run(name, ["grep", "-c", "nameserver", "/etc/resolv.conf"], check=False).stdout.strip() == "0"
        machine_ids.add(lab.run(name, ["cat", "/etc/machine-id"]).stdout.strip())
    assert len(machine_ids) == len(lab.hosts)


def test_sshd_listens_on_22_in_every_host(lab):
    for name in lab.hosts:
        assert ":22 " in lab.run(name, ["ss", "-ltnH"]).stdout + " ", name


def test_this_machine_reaches_the_gateways_front_address_on_ssh(lab):
    with socket.create_connection((_h(lab, "gw").front, 22), timeout=3) as sock:
        sock.settimeout(3)
        assert sock.recv(64).startswith(b"SSH-2.0-")


def test_this_machine_has_no_route_to_the_lan(lab):
    target = _h(lab, "h1").lan
    route = subprocess.run(["ip", "route", "get", target], capture_output=True, text=True)
    assert route.returncode != 0 and "No route to host" in route.stderr, route
    started = time.monotonic()
    with pytest.raises(OSError):
        socket.create_connection((target, 22), timeout=3).close()
    assert time.monotonic() - started < 1.0, "a LAN address must fail at once, not time out"


def test_lan_hosts_reach_the_gateways_lan_address(lab):
    gw_lan = _h(lab, "gw").lan
    probe = f"timeout 3 bash -c 'exec 3<>/dev/tcp/{gw_lan}/22; head -c 8 <&3'"
    for name in ("h1", "h2"):
        assert lab.run(name, probe).stdout == "SSH-2.0-"
        assert lab.run(name, ["ip", "route", "get", "203.0.113.9"]).stdout.split()[2] == gw_lan
    # The same from the host's network namespace only (this machine's files, the host's network).
    assert lab.netns_exec(lab.netns("h2"), probe).stdout == "SSH-2.0-"


def test_tun_is_usable_in_the_gateway(lab):
    lab.run("gw", "ip tuntap add mode tun dev tuntest && ip link show tuntest && ip tuntap del mode tun dev tuntest")
    # wireguard-go forks into the background and exits once its interface is deleted.
    lab.run("gw", "wireguard-go wgtest")
    try:
        assert "wgtest" in lab.run("gw", ["wg", "show", "interfaces"]).stdout
    finally:
        lab.run("gw", ["ip", "link", "del", "wgtest"], check=False)
    deadline = time.monotonic() + 5
    while lab.run("gw", ["pgrep", "-x", "wireguard-go"], check=False).returncode == 0:
        assert time.monotonic() < deadline, "wireguard-go did not exit after its interface was deleted"
        time.sleep(0.1)


def test_the_gateway_may_set_its_network_sysctls(lab):
    # converge writes net.ipv4.ip_forward on the gateway; the rest of /proc/sys stays read-only.
    lab.run("gw", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    try:
        assert lab.run("gw", ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"
    finally:
        lab.run("gw", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    assert lab.run("gw", "echo x > /proc/sys/kernel/hostname", check=False).returncode != 0


def test_a_client_on_the_front_network_reaches_only_the_front(lab):
    ns = lab.add_client("laptop", str(ipaddress.ip_network(FRONT)[50]))
    probe = f"timeout 3 bash -c 'exec 3<>/dev/tcp/{_h(lab, 'gw').front}/22; head -c 8 <&3'"
    assert lab.netns_exec(ns, probe).stdout == "SSH-2.0-"
    assert lab.netns_exec(ns, ["ip", "route", "get", _h(lab, "h1").lan], check=False).returncode != 0


def test_teardown_leaves_nothing_and_may_run_twice():
    nets = subnets("tlabx")
    front, lan = str(nets.front), str(nets.lan)
    one = Lab("tlabx", [LabHost("solo", str(nets.lan[2]), str(nets.front[2]))], front=front, lan=lan)
    with one:
        assert one.run("solo", "hostname").stdout.strip() == "solo"
        one.add_client("peer", str(nets.front[9]))
        assert _leftovers("tlabx")
        assert _routes(lan) and _routes(lan)[0].get("type") == "unreachable"
    print(f"\nlab: 1 host down in {one.timings['down']:.2f} s")
    assert _leftovers("tlabx") == []
    assert _routes(lan) == [] and _routes(front) == []
    one.down()
    assert _leftovers("tlabx") == []


def test_a_failed_bring_up_reports_the_hosts_log_and_cleans_up():
    nets = subnets("tlabf")
    failing = Lab("tlabf", [LabHost("slow", str(nets.lan[2]), str(nets.front[2]))], front=str(nets.front),
                  lan=str(nets.lan), boot_timeout=0.0)
    with pytest.raises(LabError, match=r"(?s)not up after .*last \d+ lines of .*slow\.log"):
        failing.up()
    assert _leftovers("tlabf") == []


def test_leftovers_of_a_crashed_run_are_swept_before_the_next_one():
    prefix = "tlabc"
    front, lan = str(subnets(prefix).front), str(subnets(prefix).lan)
    cli = subprocess.Popen(
        [sys.executable, "-m", "lab", "up", "--prefix", prefix, "--front", front, "--lan", lan,
         "--hosts", "", "--seconds", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = cli.stdout.readline()
            lines.append(line)
            if line.startswith("up in") or not line:
                break
        assert lines[-1].startswith("up in"), "".join(lines)
    finally:
        cli.kill()  # a crash: no teardown runs
        cli.wait(timeout=10)
        cli.stdout.close()
    assert any(item.startswith("nspawn pid") for item in _leftovers(prefix))
    again = Lab(prefix, layout("gw", (), front=front, lan=lan), front=front, lan=lan)
    with again:
        assert again.run("gw", ["systemctl", "is-system-running"], check=False).stdout.strip() in ("running", "degraded")
    assert _leftovers(prefix) == []
