"""The backup lab's stack: a gateway, a borg target, two clients with data (one with a PostgreSQL database) and an offsite server outside the stack.

Used by tests/test_backup_lab.py and bench/backup.py. Everything but the hosts, addresses and
keys is the real prod config, so what the lab proves is what production runs.
"""

from __future__ import annotations

import ipaddress
import secrets
import shlex
import time
from dataclasses import dataclass, field

from ops.labstack import LabStack, lab_stack, ssh_keypair
from spec.load import build_stack

FRONT = ipaddress.ip_network("10.213.70.0/24")
LAN = ipaddress.ip_network("10.213.71.0/24")
VPN = ipaddress.ip_network("10.213.72.0/24")
PREFIX = "hbk"
OFFSITE_HOST = "off"
OFFSITE_USER = "offsite"
OFFSITE_PATH = "/srv/offsite"
TARGET = "bk"
CLIENTS = ("c1", "c2")
# c1 runs a wiki with files and a PostgreSQL database; c2 a file store with two directories.
SERVICES = {
    "wiki": {"host": "c1", "port": 8080, "data_paths": ["/srv/wiki"]},
    "files": {"host": "c2", "port": 8081, "data_paths": ["/srv/files", "/var/lib/files"]},
}
DATABASE = {"engine": "postgresql", "name": "wiki"}


@dataclass
class BackupLabStack(LabStack):
    lab_hosts: list = field(default_factory=list)
    lan_gateway: str = ""
    offsite_address: str = ""


def lab_hosts() -> list:
    from ops.lab import LabHost

    f, n = list(FRONT.hosts()), list(LAN.hosts())
    return [
        LabHost("gw", str(n[1]), str(f[1])),
        LabHost(TARGET, str(n[2])),
        LabHost("c1", str(n[3])),
        LabHost("c2", str(n[4])),
        # Not in the stack: the offsite server somebody else runs. Only its host key is configured.
        LabHost(OFFSITE_HOST, str(n[5])),
    ]


def backup_lab_stack(offsite_host_key: str, database: bool = True) -> BackupLabStack:
    """A valid prod-like stack for the lab hosts, with every `borg/...` late value made as the program would."""
    base = lab_stack("prod", hosts=("gw",), members=(), front=FRONT, lan=LAN, vpn=VPN)
    raw = base.raw
    n = list(LAN.hosts())
    node = next(iter(raw["proxmox"]["nodes"]))
    first_id = raw["site"]["vm_ids"]["first"]
    gw = raw["hosts"]["gw"]
    raw["hosts"] = {
        "gw": gw,
        # Converged before the clients (boot_and_converge keeps this order), so their first
        # converge already finds the target and makes their repositories.
        TARGET: {"vm_id": first_id + 7, "node": node, "lan_ip": str(n[2]), "roles": ["backup_target"], "holds_data": True},
        "c1": {"vm_id": first_id + 3, "node": node, "lan_ip": str(n[3]), "roles": ["app"]},
        "c2": {"vm_id": first_id + 4, "node": node, "lan_ip": str(n[4]), "roles": ["app"]},
    }
    services = {k: dict(v) for k, v in SERVICES.items()}
    if database:
        services["wiki"]["databases"] = [dict(DATABASE)]
    raw["services"] = services
    # The monitoring section names catalog hosts this lab does not have; backups are the subject here.
    raw.pop("monitoring", None)
    backup = dict(raw.get("backup") or {})
    backup.pop("extra_paths", None)
    backup.pop("target", None)
    backup["offsite"] = {
        "host": str(n[5]), "user": OFFSITE_USER, "path": OFFSITE_PATH, "host_key": offsite_host_key,
        "schedule": "*-*-* 05:00",
    }
    raw["backup"] = backup
    stack = build_stack(raw, "prod")
    ls = BackupLabStack("prod", raw, stack, base.keys, base.wireguard, dict(base.front_ip),
                        lab_hosts=lab_hosts(), lan_gateway=str(n[1]), offsite_address=str(n[5]))
    for c in CLIENTS:
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
}


def make_data(lab) -> dict[str, int]:
    """Write the data set into the clients; bytes per client."""
    sizes = {}
    for client, dirs in DATA.items():
        script = [f"mkdir -p {d} && for i in $(seq 1 {n}); do head -c {size} /dev/urandom >{d}/f$i; done"
                  for d, (n, size) in dirs.items()]
        lab.run(client, " && ".join(script), timeout=120)
        sizes[client] = sum(n * size for n, size in dirs.values())
    return sizes


def start_postgres(lab) -> bool:
    """A PostgreSQL cluster on c1 with a table, for borgmatic's dump hook; False if it cannot run here."""
    if lab.run("c1", "pg_ctlcluster 15 main start", check=False, timeout=60).returncode != 0:
        return False
    psql = "runuser -u postgres -- psql -q"
    lab.run("c1", f"{psql} -c 'CREATE DATABASE wiki'", timeout=60)
    sql = "CREATE TABLE pages (title text); INSERT INTO pages VALUES ('restored from borg');"
    lab.run("c1", f"{psql} -d wiki -c {shlex.quote(sql)}", timeout=60)
    return True


def offsite_host_key(lab) -> str:
    """The offsite server's own host key, pinned in backup.offsite.host_key as an operator would."""
    return " ".join((lab.root_dir(OFFSITE_HOST) / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2])


def setup_offsite(lab, ls: BackupLabStack) -> None:
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


def prepare(lab) -> Prepared:
    """Data, database and offsite account in place, then every host's first boot and converge."""
    from ops.labstack import boot_and_converge

    database = start_postgres(lab)
    ls = backup_lab_stack(offsite_host_key(lab), database=database)
    setup_offsite(lab, ls)
    sizes = make_data(lab)
    started = time.monotonic()
    first = boot_and_converge(lab, ls)
    timings = {"lab up": lab.timings.get("up", 0.0), "first boot + converge, 4 hosts": time.monotonic() - started}
    timings.update({f"converge {h}": r.seconds for h, r in first.items()})
    return Prepared(ls, first, database, sizes, timings)


def start_unit(lab, host: str, unit: str, timeout: float = 600.0):
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


def _cgroup_not_set_up(lab, host: str, unit: str) -> bool:
    """True when the unit's last start failed with 219/CGROUP (systemd could not place it in its cgroup)."""
    shown = lab.run(host, ["systemctl", "show", "-p", "ExecMainStatus", "-p", "Result", unit], check=False).stdout
    journal = lab.run(host, f"journalctl -u {unit} -n 5 --no-pager -o cat", check=False).stdout
    return "status=219/CGROUP" in journal or "ExecMainStatus=219" in shown
