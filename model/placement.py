"""Where a service or an address may go: ports roles already hold, reserved public addresses, the zone.

Each of these passed validation before and failed only on a host (a service on port 22 opened sshd
to the whole LAN, one on the proxy's 443 proxied to itself) or in the policy pack, after every
resource was registered and without a key path. Checked with the other cross-field checks.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from .derive import NODE_EXPORTER_PORT
from .roles import held_ports, public_ports
from .errors import Problem

# Roles whose host takes no catalog service. The gateway is the one host the internet reaches over
# SSH and where the VPN enters the LAN; the backup target holds every host's repositories. A service
# there shares a host with what protects everything else, so it is refused outright rather than
# allowed by an opt-in: a stack that needs one more service has room for one more VM.
NO_SERVICE_ROLES = {
    "gateway": "the SSH bastion and VPN gateway, the host every login passes through",
    "backup_target": "the backup target, which holds every host's repositories",
}


def role_ports(roles: list[str]) -> dict[int, str]:
    """TCP ports a host's own daemons hold, whatever the catalog says: port -> what holds it."""
    ports = {22: "sshd", NODE_EXPORTER_PORT: "node_exporter (on every host)"}
    for role in roles:
        for proto, port, comment in public_ports(role):
            if proto == "tcp":
                ports.setdefault(port, f"the {role} role ({comment})")
        for port, what in held_ports(role):
            ports.setdefault(port, f"{what} (the {role} role)")
    return ports


def check_services_placement(site, hosts: dict, services: dict) -> list[Problem]:
    out: list[Problem] = []
    for name, svc in sorted(services.items()):
        p = f"services.{name}"
        host = hosts.get(svc.host)
        if host is not None:
            for role, why in NO_SERVICE_ROLES.items():
                if role in host.roles:
                    out.append(
                        Problem(
                            f"{p}.host",
                            f"{svc.host} is {why}; no service runs there: move it to another host "
                            "(add a VM to hosts if none fits)",
                        )
                    )
            held = role_ports(host.roles)
            if svc.port is not None and svc.port in held and svc.retired is None:
                free = next(q for q in range(8080, 65536) if q not in held)
                out.append(
                    Problem(
                        f"{p}.port",
                        f"{svc.port} on {svc.host} is already held by {held[svc.port]}; a service there would "
                        f"open or take over that port: pick another port (e.g. {free})",
                    )
                )
        if site is not None:
            for i, domain in enumerate(svc.domains):
                if domain != site.domain and not domain.endswith(f".{site.domain}"):
                    out.append(
                        Problem(
                            f"{p}.domains[{i}]",
                            f"{domain} is outside the zone this stack serves ({site.domain}): no record would "
                            f"point it here and no certificate could be issued for it; use a name under {site.domain}",
                        )
                    )
    return out


def _reserved(net, gateway) -> dict:
    """Addresses of a public network no host may take: address -> why."""
    out = {}
    if gateway is not None:
        out[gateway] = "the public network's gateway"
    if isinstance(net, ipaddress.IPv4Network):
        if net.prefixlen < 31:  # RFC 3021: a /31 has no network or broadcast address
            out.setdefault(net.network_address, f"the network address of {net}")
            out.setdefault(net.broadcast_address, f"the broadcast address of {net}")
    elif isinstance(net, ipaddress.IPv6Network) and net.prefixlen < 127:
        # RFC 4291 2.6.1: the Subnet-Router anycast address; RFC 2526: the top 128 are subnet anycast.
        out.setdefault(net.network_address, f"the Subnet-Router anycast address of {net} (RFC 4291)")
        if net.prefixlen <= 121:
            first = net.broadcast_address - 127
            out[("range", first, net.broadcast_address)] = f"reserved subnet anycast ({first} and above, RFC 2526)"
    return out


def check_public_addresses(network, hosts: dict) -> list[Problem]:
    pub = getattr(network, "public", None)
    if pub is None:
        return []
    out: list[Problem] = []
    nets = {"public_ipv4": ("ipv4_cidr", pub.ipv4_cidr, pub.ipv4_gateway), "public_ipv6": ("ipv6_cidr", pub.ipv6_cidr, pub.ipv6_gateway)}
    for name, host in sorted(hosts.items()):
        for field, (net_field, net, gateway) in nets.items():
            ip = getattr(host, field)
            if ip is None or net is None or ip not in net:
                continue  # outside the network or none: model/checks.py reports it
            why = _why_reserved(ip, _reserved(net, gateway))
            if why:
                out.append(
                    Problem(
                        f"hosts.{name}.{field}",
                        f"{ip} is {why} (network.public.{net_field}), which no host may take; "
                        f"pick another address in {net}",
                    )
                )
    return out


def _why_reserved(ip, reserved: dict) -> Optional[str]:
    for key, why in reserved.items():
        if isinstance(key, tuple):
            if key[1] <= ip <= key[2]:
                return why
        elif ip == key:
            return why
    return None
