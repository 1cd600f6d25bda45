"""What the catalog makes of a valid stack's `dns` section (model/dns.py): the zone's name servers and
the hosts their glue points at, the names MX records point at, the addresses each name gets.

Shared by the zone renderer (render/roles/dns.py) and the section's checks (model/check_dns.py), so
both read one answer. The functions take the stack's parts, as the checks have them.
"""

from __future__ import annotations

import ipaddress
from typing import Optional, Union

from . import facts
from .dns import Dns, MxHost, NameServer
from .stack import Host, Network, Service

IpAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def published_addresses(network: Network, host: Host) -> list[IpAddress]:
    """The addresses the zone gives `host`: its public ones where the stack has a public network,
    else its LAN address (a stack reached only over the VPN serves its zone to the VPN)."""
    if network.public is not None:
        return [ip for ip in (host.public_ipv4, host.public_ipv6) if ip is not None]
    return [host.lan_ip]


def in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith(f".{zone}")


def nameservers(dns: Dns, zone: str) -> list[NameServer]:
    return list(dns.nameservers) or [NameServer(name=f"ns1.{zone}")]


def nameserver_host(ns: NameServer, hosts: dict[str, Host]) -> Optional[str]:
    """The catalog host an in-zone name server's glue points at (the one `dns` host unless named)."""
    if ns.host is not None:
        return ns.host
    candidates = facts.dns_hosts(hosts)
    return candidates[0] if len(candidates) == 1 else None


def mx_name(mx: MxHost, zone: str) -> str:
    """The name the MX record points at: the outside server's, or the in-zone name of a catalog host."""
    if "." in mx.host:
        return mx.host
    return mx.name or f"mail.{zone}"


def address_claims(dns: Dns, zone: str, hosts: dict[str, Host], services: dict[str, Service]):
    """(in-zone name, key path, catalog host) for every name the zone must give an address."""
    front = facts.front_host(hosts)
    for sname, svc in sorted(services.items()):
        if not svc.public or front is None:
            continue
        for i, d in enumerate(svc.domains):
            if in_zone(d, zone):
                yield d, f"services.{sname}.domains[{i}]", front
    for i, ns in enumerate(nameservers(dns, zone)):
        if in_zone(ns.name, zone):
            host = nameserver_host(ns, hosts)
            if host is not None:
                yield ns.name, f"dns.nameservers[{i}].name", host
    for i, mx in enumerate(dns.mx):
        if "." not in mx.host:
            yield mx_name(mx, zone), f"dns.mx[{i}].name", mx.host
