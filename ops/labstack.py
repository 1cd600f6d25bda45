"""The stack a lab is converged with: a real stack file's settings with the lab's own hosts, addresses and keys.

Everything else (roles, templates, access rules, firewall logic) is the real program's, so what the
lab proves is what production runs.
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from spec.load import build_stack, read_stack_config
from spec.model import Stack

# Lab-own ranges, never used by committed config and never routed off this machine.
FRONT = ipaddress.ip_network("10.213.0.0/24")
LAN = ipaddress.ip_network("10.213.1.0/24")
VPN = ipaddress.ip_network("10.213.9.0/24")


@dataclass
class Keypair:
    private_openssh: str
    public_line: str

    def write(self, path: Path) -> Path:
        path.write_text(self.private_openssh)
        path.chmod(0o600)
        return path


def ssh_keypair(comment: str) -> Keypair:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return Keypair(private, f"{public} {comment}")


def wireguard_keypair() -> tuple[str, str]:
    """(private, public) in wg's base64 form."""
    import base64

    key = x25519.X25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode(), base64.b64encode(pub).decode()


@dataclass
class LabStack:
    name: str
    raw: dict
    stack: Stack
    keys: dict[str, Keypair] = field(default_factory=dict)
    """SSH keypairs by person, plus `deploy`."""
    wireguard: dict[str, tuple[str, str]] = field(default_factory=dict)
    """WireGuard (private, public) by person."""
    front_ip: dict[str, str] = field(default_factory=dict)


def lab_stack(
    base: str = "prod",
    hosts: tuple[str, ...] = ("gw", "h1", "h2"),
    members: tuple[str, ...] = ("dave",),
    admins: tuple[str, ...] = ("alice", "bob"),
    front: ipaddress.IPv4Network = FRONT,
    lan: ipaddress.IPv4Network = LAN,
    vpn: ipaddress.IPv4Network = VPN,
) -> LabStack:
    """A valid stack named like `base` (prod: only admins log in; staging: members too).

    The first host is the gateway; the deployment server is the front network's first address,
    where the tests run.
    """
    raw = copy.deepcopy(read_stack_config(base))
    front_hosts = list(front.hosts())
    lan_hosts = list(lan.hosts())
    deploy_source = str(front_hosts[0])
    keys = {name: ssh_keypair(f"{name}@lab") for name in (*admins, *members, "deploy")}
    wg = {name: wireguard_keypair() for name in (*admins, *members)}
    raw["people"] = {
        name: {
            "keys": [keys[name].public_line],
            "roles": ["admin", "member"] if name in admins else ["member"],
            "wireguard": {"public_key": wg[name][1], "index": 10 + i},
        }
        for i, name in enumerate((*admins, *members))
    }
    raw["access"] = {
        "admins": list(admins),
        "members": list(members) + list(admins),
        "deploy": {"public_key": keys["deploy"].public_line, "source": deploy_source},
    }
    gateway, others = hosts[0], hosts[1:]
    node = next(iter(raw["proxmox"]["nodes"]))
    raw["network"].update(
        {
            "lan_cidr": str(lan),
            # LAN hosts route through the gateway host in the lab (there is no Proxmox NAT here).
            "gateway": str(lan_hosts[0]),
            "resolvers": [str(lan_hosts[0])],
            "public": {
                "bridge": raw["network"].get("public", {}).get("bridge", "vmbr0"),
                "ipv4_cidr": str(front),
                "ipv4_gateway": deploy_source,
            },
            "vpn": {"cidr": str(vpn), "port": 51820, "endpoint": f"{front_hosts[1]}:51820"},
        }
    )
    bridges = raw["proxmox"]["nodes"][node]["bridges"]
    if "vmbr0" not in bridges:
        bridges.append("vmbr0")
    first_id = raw["site"]["vm_ids"]["first"]
    raw["hosts"] = {gateway: {"vm_id": first_id + 1, "node": node, "lan_ip": str(lan_hosts[1]),
                              "public_ipv4": str(front_hosts[1]), "roles": ["gateway"]}}
    for i, name in enumerate(others):
        # The last host watches the others, so node_exporter's LAN-only firewall rule can be shown.
        role = "monitoring" if i == len(others) - 1 and len(others) > 1 else "app"
        raw["hosts"][name] = {"vm_id": first_id + 2 + i, "node": node, "lan_ip": str(lan_hosts[2 + i]), "roles": [role]}
    raw["services"] = {}
    # The zone names catalog hosts (name servers, mail) that a lab of this shape does not have.
    raw.pop("dns", None)
    stack = build_stack(raw, base)
    return LabStack(base, raw, stack, keys, wg, {gateway: str(front_hosts[1])})


def boot_and_converge(lab, ls: LabStack) -> dict:
    """Each lab host's first boot with its real cloud-init snippet, then converge, gateway first.

    Returns the converge Result per host. This is what `pulumi up` does to a new VM.
    """
    import concurrent.futures

    from ops.remote import converge
    from render.cloud_init import user_data
    from spec import derive

    hosts = list(ls.stack.hosts)
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(lambda h: lab.first_boot(h, user_data(ls.stack, h)), hosts))
    gateway = derive.gateway_name(ls.stack)
    order = [gateway] + [h for h in hosts if h != gateway]
    return {h: converge(ls.stack, h, ls.keys["deploy"].private_openssh) for h in order}
