"""The backup lab's stack: a gateway, a borg target, two clients with data (one with a PostgreSQL database) and an offsite server outside the stack.

Used by tests/test_backup_lab.py and bench/backup.py. Everything but the hosts, addresses and
keys is the real prod config, so what the lab proves is what production runs.
"""

from __future__ import annotations

import ipaddress
import secrets
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
