"""The backup lab's stack: a gateway, a borg target, clients with data (c1 with a PostgreSQL database) and an offsite server outside the stack.

Used by tests/test_backup_lab.py, tests/test_backup_attack_lab.py and bench/backup.py. Everything
but the hosts, addresses, keys and the layout's own settings (its clients, quotas) is the real prod
config, so what the lab proves is what production runs. A Layout says which lab: prefix, subnets,
clients; DEFAULT is the original two-client lab.
"""

from __future__ import annotations

import ipaddress
import secrets
import shlex
import time
from dataclasses import dataclass, field

from model.load import build_stack

from .hosts import Lab, LabHost
from .stack import LabStack, boot_and_converge, lab_stack, ssh_keypair
from .subnets import subnets

OFFSITE_HOST = "off"
OFFSITE_USER = "offsite"
OFFSITE_PATH = "/srv/offsite"
TARGET = "bk"
# c1 runs a wiki with files and a PostgreSQL database; c2 a file store with two directories; c3 (in
# layouts that have it) a small notes directory.
SERVICES = {
    "wiki": {"host": "c1", "port": 8080, "data_paths": ["/srv/wiki"]},
    "files": {"host": "c2", "port": 8081, "data_paths": ["/srv/files", "/var/lib/files"]},
    "notes": {"host": "c3", "port": 8082, "data_paths": ["/srv/notes"]},
}
DATABASE = {"engine": "postgresql", "name": "wiki"}


@dataclass(frozen=True)
class Layout:
    """One backup lab: its name prefix, networks, clients, and backup settings over the prod ones."""

    prefix: str
    front: ipaddress.IPv4Network
    lan: ipaddress.IPv4Network
    vpn: ipaddress.IPv4Network
    clients: tuple[str, ...] = ("c1", "c2")
    backup: dict = field(default_factory=lambda: {"storage_quota": "5G"})
    """Over the prod backup section; the lab target's 20 GiB disk must hold every quota."""
    offsite_index: int = 5
    """The offsite server's place among the LAN's addresses: after the target and every client."""


DEFAULT = Layout("hbk", subnets("hbk").front, subnets("hbk").lan, subnets("hbk").vpn)
FRONT, LAN, VPN, PREFIX, CLIENTS = DEFAULT.front, DEFAULT.lan, DEFAULT.vpn, DEFAULT.prefix, DEFAULT.clients


@dataclass
class BackupLabStack(LabStack):
    lab_hosts: list = field(default_factory=list)
    lan_gateway: str = ""
    offsite_address: str = ""


def lab_hosts(layout: Layout = DEFAULT) -> list[LabHost]:
    f, n = list(layout.front.hosts()), list(layout.lan.hosts())
    return [
        LabHost("gw", str(n[1]), str(f[1])),
        LabHost(TARGET, str(n[2])),
        *[LabHost(c, str(n[3 + i])) for i, c in enumerate(layout.clients)],
        # Not in the stack: the offsite server somebody else runs. Only its host key is configured.
        LabHost(OFFSITE_HOST, str(n[layout.offsite_index])),
    ]


def backup_lab_stack(offsite_host_key: str, database: bool = True, layout: Layout = DEFAULT) -> BackupLabStack:
    """A valid prod-like stack for the lab hosts, with every `borg/...` late value made as the program would."""
    base = lab_stack("prod", hosts=("gw",), members=(), front=layout.front, lan=layout.lan, vpn=layout.vpn)
    raw = base.raw
    n = list(layout.lan.hosts())
    offsite_ip = str(n[layout.offsite_index])
    node = next(iter(raw["proxmox"]["nodes"]))
    first_id = raw["site"]["vm_ids"]["first"]
    gw = raw["hosts"]["gw"]
    raw["hosts"] = {
        "gw": gw,
        # Converged before the clients (boot_and_converge keeps this order), so their first
        # converge already finds the target and makes their repositories.
        TARGET: {"vm_id": first_id + 7, "node": node, "lan_ip": str(n[2]), "roles": ["backup_target"], "holds_data": True},
        **{c: {"vm_id": first_id + 3 + i, "node": node, "lan_ip": str(n[3 + i]), "roles": ["app"]}
           for i, c in enumerate(layout.clients)},
    }
    services = {k: dict(v) for k, v in SERVICES.items() if v["host"] in layout.clients}
    if database and "c1" in layout.clients:
        services["wiki"]["databases"] = [dict(DATABASE)]
    raw["services"] = services
    # The monitoring section names catalog hosts this lab does not have; backups are the subject here.
    raw.pop("monitoring", None)
    backup = dict(raw.get("backup") or {})
    backup.pop("extra_paths", None)
    backup.pop("target", None)
    backup["offsite"] = {
        "host": offsite_ip, "user": OFFSITE_USER, "path": OFFSITE_PATH, "host_key": offsite_host_key,
        "schedule": "*-*-* 05:00",
    }
    backup.update(layout.backup)
    raw["backup"] = backup
    stack = build_stack(raw, "prod")
    ls = BackupLabStack("prod", raw, stack, base.keys, base.wireguard, dict(base.front_ip),
                        lab_hosts=lab_hosts(layout), lan_gateway=str(n[1]), offsite_address=offsite_ip)
    for c in layout.clients:
        pair = ssh_keypair(f"borg-{c}@lab")
        ls.late[f"borg/ssh-key/{c}"] = pair.private_openssh
        ls.late[f"borg/ssh-pubkey/{c}"] = pair.public_line
        ls.late[f"borg/passphrase/{c}"] = secrets.token_urlsafe(36)
    offsite = ssh_keypair("borg-offsite@lab")
    ls.late["borg/offsite/ssh-key"] = offsite.private_openssh
    ls.late["borg/offsite/ssh-pubkey"] = offsite.public_line
    return ls


# The lab's data set: what each client holds (random bytes are incompressible, like real media).
DATA = {
    "c1": {"/srv/wiki/pages": (400, 2048), "/srv/wiki/media": (10, 2 * 1024 * 1024)},
    "c2": {"/srv/files/store": (50, 200 * 1024), "/var/lib/files/index": (20, 1024)},
    "c3": {"/srv/notes": (30, 4096)},
}


def make_data(lab: Lab, layout: Layout = DEFAULT) -> dict[str, int]:
    """Write the data set into the clients; bytes per client."""
    sizes = {}
    for client, dirs in DATA.items():
        if client not in layout.clients:
            continue
        script = [f"mkdir -p {d} && for i in $(seq 1 {n}); do head -c {size} /dev/urandom >{d}/f$i; done"
                  for d, (n, size) in dirs.items()]
        lab.run(client, " && ".join(script), timeout=120)
        sizes[client] = sum(n * size for n, size in dirs.values())
    return sizes


def start_postgres(lab: Lab) -> bool:
    """A PostgreSQL cluster on c1 with a table, for borgmatic's dump hook; False if it cannot run here."""
    if lab.run("c1", "pg_ctlcluster 15 main start", check=False, timeout=60).returncode != 0:
        return False
    psql = "runuser -u postgres -- psql -q"
    lab.run("c1", f"{psql} -c 'CREATE DATABASE wiki'", timeout=60)
    sql = "CREATE TABLE pages (title text); INSERT INTO pages VALUES ('restored from borg');"
    lab.run("c1", f"{psql} -d wiki -c {shlex.quote(sql)}", timeout=60)
    return True


def offsite_host_key(lab: Lab) -> str:
    """The offsite server's own host key, pinned in backup.offsite.host_key as an operator would."""
    return " ".join((lab.root_dir(OFFSITE_HOST) / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2])


def setup_offsite(lab: Lab, ls: BackupLabStack) -> None:
    """What the offsite server's operator does: an account, the target's key, the directory."""
    pub = ls.late["borg/offsite/ssh-pubkey"]
    home = f"/home/{OFFSITE_USER}"
    lab.run(OFFSITE_HOST, f"useradd --create-home --shell /bin/sh {OFFSITE_USER} && "
                          f"install -d -o {OFFSITE_USER} -m 0700 {home}/.ssh {OFFSITE_PATH} && "
                          f"echo {shlex.quote(pub)} >{home}/.ssh/authorized_keys && "
                          f"chown {OFFSITE_USER} {home}/.ssh/authorized_keys")


@dataclass
class Prepared:
    ls: BackupLabStack
    first: dict
    database: bool
    sizes: dict[str, int]
    timings: dict[str, float]


def prepare(lab: Lab, layout: Layout = DEFAULT) -> Prepared:
    """Data, database and offsite account in place, then every host's first boot and converge."""
    database = start_postgres(lab)
    ls = backup_lab_stack(offsite_host_key(lab), database=database, layout=layout)
    setup_offsite(lab, ls)
    sizes = make_data(lab, layout)
    started = time.monotonic()
    first = boot_and_converge(lab, ls)
    timings = {"lab up": lab.timings.get("up", 0.0),
               f"first boot + converge, {2 + len(layout.clients)} hosts": time.monotonic() - started}
    timings.update({f"converge {h}": r.seconds for h, r in first.items()})
    return Prepared(ls, first, database, sizes, timings)


def start_unit(lab: Lab, host: str, unit: str, timeout: float = 600.0):
    """systemctl start (a oneshot returns when done); (CompletedProcess, seconds)."""
    started = time.monotonic()
    r = lab.run(host, ["systemctl", "start", unit], check=False, timeout=timeout)
    if r.returncode != 0 and _cgroup_not_set_up(lab, host, unit):
        # A lab artifact, once in several full runs: systemd inside nspawn could not empty the unit's
        # previous cgroup ("Failed to kill control group … Input/output error") and the next start
        # fails with 219/CGROUP before running anything. Once more, from a clean slate.
        lab.run(host, ["systemctl", "reset-failed", unit], check=False)
        time.sleep(1)
        started = time.monotonic()
        r = lab.run(host, ["systemctl", "start", unit], check=False, timeout=timeout)
    return r, time.monotonic() - started


def _cgroup_not_set_up(lab: Lab, host: str, unit: str) -> bool:
    """True when the unit's last start failed with 219/CGROUP (systemd could not place it in its cgroup)."""
    shown = lab.run(host, ["systemctl", "show", "-p", "ExecMainStatus", "-p", "Result", unit], check=False).stdout
    journal = lab.run(host, f"journalctl -u {unit} -n 5 --no-pager -o cat", check=False).stdout
    return "status=219/CGROUP" in journal or "ExecMainStatus=219" in shown
