"""Checks of the `dns` section (model/dns.py) against the rest of the stack: glue for in-zone name
servers, reachable mail servers, one set of addresses per name, SPF's lookup limit, extra records
that collide with none the catalog generates. Each problem names its key and the fix.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import ValidationError

from . import facts
from .derive_dns import address_claims, in_zone, mx_name, nameserver_host, nameservers, published_addresses
from .dns import Dns
from .errors import ConfigError, Problem, problems_from
from .stack import Host, Network, Service, Site, Stack

# RFC 7208 section 4.6.4: at most 10 mechanisms that cost a DNS lookup (`mx` and each include).
SPF_MAX_LOOKUPS = 10


def check_dns(
    dns: Dns,
    site: Optional[Site],
    network: Optional[Network],
    hosts: dict[str, Host],
    services: dict[str, Service],
) -> list[Problem]:
    """Checks of the dns section against the rest of the stack; each problem names its key and the fix."""
    out: list[Problem] = []
    add = lambda path, msg: out.append(Problem(path, msg))  # noqa: E731
    if site is None or network is None:
        return out  # reported where those sections are parsed
    zone = site.domain
    known = ", ".join(sorted(hosts)) or "none"
    servers = nameservers(dns, zone)

    def needs_addresses(path: str, host: str, what: str) -> None:
        if host not in hosts:
            add(path, f"unknown host {host!r}; known hosts: {known}")
        elif not published_addresses(network, hosts[host]):
            add(path, f"hosts.{host} has no public address for {what}; give it public_ipv4/public_ipv6 or pick another host")

    if not facts.dns_hosts(hosts):
        add("dns", "no host has the `dns` role to serve the zone; add `dns` to the roles of the host that runs BIND")

    # Name servers: in-zone names need glue from a catalog host; outside names must not claim one.
    seen_ns: dict[str, int] = {}
    for i, ns in enumerate(servers):
        path = f"dns.nameservers[{i}]"
        if ns.name in seen_ns:
            add(f"{path}.name", f"{ns.name} is listed twice (also dns.nameservers[{seen_ns[ns.name]}]); remove one")
        seen_ns.setdefault(ns.name, i)
        if not in_zone(ns.name, zone):
            if ns.host is not None:
                add(f"{path}.host", f"{ns.name} is outside the zone {zone}, so it gets no address here; remove host")
            continue
        host = nameserver_host(ns, hosts)
        # With no nameservers configured the default ns1 has no entry of its own to point at.
        ns_path = path if dns.nameservers else "dns.nameservers"
        if host is None:
            found = facts.dns_hosts(hosts)
            if found:  # none at all is reported above
                add(
                    ns_path,
                    f"{ns.name} could be any of the hosts with role `dns` ({', '.join(found)}); set host to the one it names",
                )
        else:
            needs_addresses(f"{path}.host" if ns.host else ns_path, host, f"the name server {ns.name}")

    # Mail: catalog hosts must exist and be reachable; in-zone outside names must have an address here.
    claims = {name for name, _, _ in address_claims(dns, zone, hosts, services)}
    targets: dict[str, int] = {}
    for i, mx in enumerate(dns.mx):
        path = f"dns.mx[{i}]"
        target = mx_name(mx, zone)
        if "." in mx.host:
            if mx.name is not None:
                add(f"{path}.name", f"{mx.host} is a domain name already; name is only for catalog hosts, remove it")
            if in_zone(mx.host, zone) and mx.host not in claims:
                add(
                    f"{path}.host",
                    f"{mx.host} is inside the zone but nothing in the catalog gives it an address; "
                    "name the catalog host instead (e.g. lists)",
                )
        else:
            needs_addresses(f"{path}.host", mx.host, "the mail server")
            if not in_zone(target, zone):
                add(f"{path}.name", f"{target} is outside the zone {zone}; pick a name inside it, e.g. mail.{zone}")
        if target in targets:
            add(
                f"{path}.name" if "." not in mx.host else f"{path}.host",
                f"{target} is already dns.mx[{targets[target]}]'s target; give each mail server its own name (e.g. mail2.{zone})",
            )
        targets.setdefault(target, i)

    # One name, one set of addresses: a service domain cannot also be a mail or name server's name
    # unless it is the same machine.
    addresses: dict[str, tuple[tuple[str, ...], str]] = {}
    for name, path, host in address_claims(dns, zone, hosts, services):
        if host not in hosts:
            continue
        ips = tuple(str(ip) for ip in published_addresses(network, hosts[host]))
        if name in addresses and addresses[name][0] != ips:
            add(path, f"{name} already gets other addresses from {addresses[name][1]}; pick another name")
        addresses.setdefault(name, (ips, path))

    front = facts.front_host(hosts)
    if front is not None and any(
        s.public and any(in_zone(d, zone) for d in s.domains) for s in services.values()
    ) and not published_addresses(network, hosts[front]):
        add(f"hosts.{front}", "publishes the public services but has no public address; give it public_ipv4/public_ipv6")

    lookups = (1 if dns.mx else 0) + len(dns.spf.include)
    if lookups > SPF_MAX_LOOKUPS:
        add(
            "dns.spf.include",
            f"makes {lookups} DNS lookups with `mx`; SPF allows {SPF_MAX_LOOKUPS} in all (their own includes count too); "
            "drop includes or list the senders' addresses under ip4/ip6",
        )

    selectors: dict[str, int] = {}
    for i, key in enumerate(dns.dkim):
        if key.selector in selectors:
            add(f"dns.dkim[{i}].selector", f"{key.selector!r} is already dns.dkim[{selectors[key.selector]}]'s; each key has its own selector")
        selectors.setdefault(key.selector, i)

    seen_ip: dict[str, int] = {}
    for i, ip in enumerate(dns.secondaries):
        if str(ip) in seen_ip:
            add(f"dns.secondaries[{i}]", f"{ip} is listed twice (also dns.secondaries[{seen_ip[str(ip)]}]); remove one")
        seen_ip.setdefault(str(ip), i)

    _check_extra(dns, zone, addresses, set(selectors), add)
    return out


def _check_extra(dns: Dns, zone: str, addresses: dict, selectors: set[str], add) -> None:
    generated = {f"{name.removesuffix(zone).rstrip('.') or '@'}" for name in addresses}
    generated |= {"@", "_dmarc"} | {f"{s}._domainkey" for s in selectors}
    cname_at: dict[str, int] = {}
    others_at: dict[str, int] = {}
    for i, rec in enumerate(dns.extra_records):
        path = f"dns.extra_records[{i}]"
        if rec.name == zone or rec.name.endswith(f".{zone}"):
            relative = rec.name.removesuffix(zone).rstrip(".") or "@"
            add(f"{path}.name", f"write the name relative to the zone: {relative!r}, not {rec.name!r}")
            continue
        if rec.type == "CNAME":
            if rec.name in generated or rec.name in others_at or rec.name in cname_at:
                add(f"{path}.name", f"{rec.name!r} already has other records; a CNAME must be the only record at its name")
            cname_at.setdefault(rec.name, i)
            continue
        if rec.name in cname_at:
            add(f"{path}.name", f"{rec.name!r} is dns.extra_records[{cname_at[rec.name]}]'s CNAME; a CNAME must be the only record at its name")
        others_at.setdefault(rec.name, i)
        text = rec.value.lower()
        if text.startswith("v=spf1"):
            add(f"{path}.value", "an SPF record is generated from dns.spf and dns.mx; set it there, not as an extra record")
        elif text.startswith("v=dmarc1") or rec.name == "_dmarc":
            add(f"{path}.value", "the DMARC record is generated from dns.dmarc; set it there, not as an extra record")
        elif text.startswith("v=dkim1") or rec.name.endswith("._domainkey"):
            add(f"{path}.value", "DKIM keys are generated from dns.dkim; add the key there, not as an extra record")


def parse_dns(raw: Any) -> tuple[Optional[Dns], list[Problem]]:
    """The section on its own: the model or the problems, each at its key path under `dns`."""
    try:
        return Dns.model_validate(raw if raw is not None else {}), []
    except ValidationError as exc:
        return None, problems_from("dns", exc)


def build_dns(raw: Any, stack: Stack) -> Dns:
    """The validated dns section for a validated stack; raise ConfigError listing every problem."""
    dns, problems = parse_dns(raw)
    if dns is not None:
        problems = check_dns(dns, stack.site, stack.network, stack.hosts, stack.services)
    if problems:
        raise ConfigError(stack.site.stack, problems)
    return dns
