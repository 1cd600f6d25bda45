"""Checks across fields: references, uniqueness, address ranges, id ranges and node capacity.

They run on whatever parts of the config parsed, so one broken host does not hide problems elsewhere.
CHECKS is the one list of them, as (section, check) pairs: the ones here, each section's own
(model/check_backup.py, check_dns.py, check_monitoring.py, check_mail.py) and placement (model/placement.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from . import derive, facts
from .capacity import usage
from .check_backup import check_backup
from .check_dns import check_dns
from .check_monitoring import check_monitoring
from .check_mail import check_mail
from .errors import OVER_CAPACITY, Problem
from .keys import parse_public_key
from .stack import HOST_ROLES, Access, Host, Network, Person, Service, Site
from .placement import check_public_addresses, check_services_placement
from .retire import check_retired

_HOSTNAME = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
_USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# System accounts a person must not shadow.
RESERVED_USERS = {"root", "deploy", "daemon", "bin", "sys", "nobody", "admin", "debian", "sshd", "www-data"}


@dataclass(frozen=True)
class Parsed:
    """What of one stack's config parsed, as every check sees it.

    `parts` holds each section's model (None where the section is missing or broken) and each map
    section's entries that parsed: a host that failed to parse is missing there, its name still in
    `declared`, so a reference to it is not also an "unknown host". Read a part as `c["hosts"]`.
    """

    stack_name: str
    parts: Mapping[str, Any]
    declared: Mapping[str, set[str]]

    def __getitem__(self, section: str) -> Any:
        return self.parts[section]


Check = Callable[[Parsed], list[Problem]]


def check(stack_name: str, parts: Mapping[str, Any], declared: Optional[Mapping[str, set[str]]] = None) -> list[Problem]:
    """Every cross-field check of CHECKS, in order, on whatever parts of the config parsed."""
    declared = declared or {key: set(parts[key]) for key in ("people", "hosts", "services")}
    c = Parsed(stack_name, parts, declared)
    return [p for _section, fn in CHECKS for p in fn(c)]


def _problems(fn: Callable[[Parsed, Callable[..., None]], None]) -> Check:
    """A check written with an `add(path, message, kind)` callback, as one that returns its problems."""

    def run(c: Parsed) -> list[Problem]:
        out: list[Problem] = []
        # kind OVER_CAPACITY: a node too small for its hosts, not a config mistake (`make plan` exits 2).
        fn(c, lambda path, msg, kind="config": out.append(Problem(path, msg, kind)))
        return out

    return run


@_problems
def _check_site(c: Parsed, add) -> None:
    site = c["site"]
    if site is not None:
        if site.stack != c.stack_name:
            add("site.stack", f"is {site.stack!r} but this is stack {c.stack_name!r}; set it to {c.stack_name!r}")
        if site.vm_ids.first > site.vm_ids.last:
            add("site.vm_ids", f"first {site.vm_ids.first} is above last {site.vm_ids.last}; swap them")


@_problems
def _check_network(c: Parsed, add) -> None:
    network = c["network"]
    if network is not None:
        if network.gateway not in network.lan_cidr:
            add("network.gateway", f"{network.gateway} is outside network.lan_cidr {network.lan_cidr}")
        if network.lan_cidr.prefixlen > 29:
            add("network.lan_cidr", f"{network.lan_cidr} is too small; use a /29 or larger (hosts, the LAN gateway and the deploy address)")
        elif network.gateway == derive.deploy_address_in(network.lan_cidr):
            add("network.gateway", f"{network.gateway} is the bastion's deploy address (the last usable address of "
                "network.lan_cidr, which only the deploy user's sessions leave from); pick another address")
        pub = network.public
        if pub is not None:
            if pub.ipv4_cidr and pub.ipv4_gateway and pub.ipv4_gateway not in pub.ipv4_cidr:
                add("network.public.ipv4_gateway", f"{pub.ipv4_gateway} is outside network.public.ipv4_cidr {pub.ipv4_cidr}")
            if pub.ipv4_cidr and not pub.ipv4_gateway:
                add("network.public.ipv4_gateway", "required when network.public.ipv4_cidr is set")
            # A link-local IPv6 gateway (fe80::1, common at hosters) is valid outside the prefix.
            if pub.ipv6_cidr and pub.ipv6_gateway and not pub.ipv6_gateway.is_link_local and pub.ipv6_gateway not in pub.ipv6_cidr:
                add("network.public.ipv6_gateway", f"{pub.ipv6_gateway} is outside network.public.ipv6_cidr {pub.ipv6_cidr} and not link-local")
        _check_vpn(network, c["people"], add)


@_problems
def _check_tls(c: Parsed, add) -> None:
    if c["tls"] is None and any(s.public for s in c["services"].values()):
        add("tls", "is required when a service is public (its certificates come from ACME); add the section")


@_problems
def _check_access_section(c: Parsed, add) -> None:
    if c["access"] is not None:
        _check_access(c["site"], c["access"], c["people"], c.declared["people"], add)


# Every cross-field check as (the section it is about, the check), run in this order on whatever
# parsed. A new section adds its entries here (its checks in model/check_<section>.py); check()'s
# signature and the loader stay as they are.
CHECKS: list[tuple[str, Check]] = [
    ("site", _check_site),
    ("network", _check_network),
    ("people", _problems(lambda c, add: _check_people(c["people"], add))),
    ("access", _check_access_section),
    ("hosts", _problems(lambda c, add: _check_hosts(c["site"], c["proxmox"], c["network"], c["hosts"], add))),
    ("services", _problems(lambda c, add: _check_services(c["hosts"], c.declared["hosts"], c["services"], add))),
    ("services", lambda c: check_services_placement(c["site"], c["hosts"], c["services"])),
    ("network", lambda c: check_public_addresses(c["network"], c["hosts"]) if c["network"] is not None else []),
    ("dns", lambda c: check_dns(c["dns"], c["site"], c["network"], c["hosts"], c["services"]) if c["dns"] is not None else []),
    ("tls", _check_tls),
    ("backup", lambda c: check_backup(c["backup"], c["site"], c["hosts"], c["services"])),
    ("monitoring", lambda c: check_monitoring(c["monitoring"], c["site"], c["hosts"], c["services"], c["people"])),
    ("mail", lambda c: check_mail(c["mail"], c["site"], c["hosts"], c["people"],
                                  c["access"].admins if c["access"] else None, c["dns"], c["tls"])),
    ("services", lambda c: check_retired(c["hosts"], c["services"])),
]


def _check_vpn(network: Network, people: dict[str, Person], add) -> None:
    vpn = network.vpn
    if vpn.cidr.overlaps(network.lan_cidr):
        add("network.vpn.cidr", f"{vpn.cidr} overlaps network.lan_cidr {network.lan_cidr}; pick a separate range")
    by_index: dict[int, str] = {}
    by_key: dict[str, str] = {}
    for name, person in sorted(people.items()):
        wg = person.wireguard
        if wg is None:
            continue
        path = f"people.{name}.wireguard"
        if wg.index >= vpn.cidr.num_addresses - 1:
            add(f"{path}.index", f"{wg.index} is outside network.vpn.cidr {vpn.cidr}; pick a smaller index")
        if wg.index in by_index:
            add(f"{path}.index", f"{wg.index} is already people.{by_index[wg.index]}'s; pick a free index")
        if wg.public_key in by_key:
            add(f"{path}.public_key", f"is also people.{by_key[wg.public_key]}'s key; each device has its own")
        by_index.setdefault(wg.index, name)
        by_key.setdefault(wg.public_key, name)


def _check_people(people: dict[str, Person], add) -> None:
    owner: dict[str, str] = {}
    for name, person in people.items():
        if not _USERNAME.fullmatch(name):
            add(f"people.{name}", "is not a valid login name (lower-case letters, digits, _ and -, max 32)")
        elif name in RESERVED_USERS:
            add(f"people.{name}", f"{name!r} is a system account name; pick another login name")
        for i, key in enumerate(person.keys):
            blob = parse_public_key(key).fingerprint_input
            if blob in owner and owner[blob] != name:
                add(f"people.{name}.keys[{i}]", f"the same key is also listed for {owner[blob]!r}; keys are personal")
            owner.setdefault(blob, name)


def _check_access(site: Optional[Site], access: Access, people: dict[str, Person], declared: set[str], add) -> None:
    for list_name in ("admins", "members"):
        names = getattr(access, list_name)
        seen = set()
        for i, name in enumerate(names):
            path = f"access.{list_name}[{i}]"
            if name in seen:
                add(path, f"{name!r} is listed twice; remove the duplicate")
            seen.add(name)
            if name not in declared:
                add(path, f"{name!r} is not a defined person; add people.{name} or remove the entry")
            elif name in people and list_name == "admins" and "admin" not in people[name].roles:
                add(path, f"{name!r} does not have the admin role; add `admin` to people.{name}.roles")
    if site is not None and site.ssh_access == "admins" and not 2 <= len(set(access.admins)) <= 3:
        add(
            "access.admins",
            f"has {len(set(access.admins))} admin(s) where only admins log in; "
            "name 2 or 3 (two so nobody is a single point of failure, at most three to keep access tight)",
        )
    if site is not None and site.ssh_access == "members" and not access.members:
        add("access.members", "is empty while site.ssh_access is `members`; list the members who log in")
    try:
        deploy_blob = parse_public_key(access.deploy.public_key).fingerprint_input
        for name, person in people.items():
            if any(parse_public_key(k).fingerprint_input == deploy_blob for k in person.keys):
                add("access.deploy.public_key", f"is also {name!r}'s personal key; the deploy key must be its own")
    except ValueError:
        pass


def _check_hosts(site, proxmox, network, hosts: dict[str, Host], add) -> None:
    by_vm_id: dict[int, str] = {}
    by_ip: dict[str, str] = {}
    gateways = facts.hosts_with_role(hosts, "gateway")
    if len(gateways) != 1 and hosts:
        add("hosts", f"needs exactly one host with role `gateway` (the SSH bastion); found {len(gateways)}: {gateways}")
    for name, h in hosts.items():
        p = f"hosts.{name}"
        if not _HOSTNAME.fullmatch(name):
            add(p, "is not a valid host name (lower-case letters, digits and hyphens, starting with a letter)")
        for i, r in enumerate(h.roles):
            if r not in HOST_ROLES:
                add(f"{p}.roles[{i}]", f"unknown role {r!r}; known roles: {', '.join(HOST_ROLES)}")
        if h.vm_id in by_vm_id:
            add(f"{p}.vm_id", f"{h.vm_id} is already used by hosts.{by_vm_id[h.vm_id]}; pick a free id")
        by_vm_id.setdefault(h.vm_id, name)
        for field in ("lan_ip", "public_ipv4", "public_ipv6"):
            ip = getattr(h, field)
            if ip is None:
                continue
            if str(ip) in by_ip:
                add(f"{p}.{field}", f"{ip} is already used by {by_ip[str(ip)]}; pick a free address")
            by_ip.setdefault(str(ip), f"hosts.{name}.{field}")
        if site is not None and not site.vm_ids.first <= h.vm_id <= site.vm_ids.last:
            add(
                f"{p}.vm_id",
                f"{h.vm_id} is outside this stack's range site.vm_ids {site.vm_ids.first}-{site.vm_ids.last}; "
                "pick a free id in that range",
            )
        if proxmox is not None and h.vm_id == proxmox.template.vm_id:
            add(f"{p}.vm_id", f"{h.vm_id} is the template's id (proxmox.template.vm_id); pick another")
        if network is not None:
            _check_host_network(p, h, network, add)
            if network.gateway == h.lan_ip:
                add(f"{p}.lan_ip", f"{h.lan_ip} is network.gateway; pick another address")
            if h.lan_ip == derive.deploy_address_in(network.lan_cidr):
                add(f"{p}.lan_ip", f"{h.lan_ip} is the bastion's deploy address (the last usable address of "
                    "network.lan_cidr, which only the deploy user's sessions leave from); pick another address")
        if proxmox is not None:
            node = proxmox.nodes.get(h.node)
            if node is None:
                add(f"{p}.node", f"unknown node {h.node!r}; known nodes: {', '.join(sorted(proxmox.nodes))}")
                continue
            ds = h.datastore or proxmox.default_datastore
            if ds not in node.storage:
                add(
                    f"{p}.datastore" if h.datastore else "proxmox.default_datastore",
                    f"storage {ds!r} does not exist on node {h.node!r}; it has: {', '.join(sorted(node.storage))}",
                )
            if h.cores > node.cores:
                add(f"{p}.cores", f"{h.cores} is more than node {h.node!r} has ({node.cores} threads); give it at most {node.cores}")
            if network is not None:
                if network.lan_bridge not in node.bridges:
                    add(f"{p}.node", f"node {h.node!r} has no bridge {network.lan_bridge!r} (network.lan_bridge)")
                if network.public and (h.public_ipv4 or h.public_ipv6) and network.public.bridge not in node.bridges:
                    add(f"{p}.node", f"node {h.node!r} has no bridge {network.public.bridge!r} (network.public.bridge)")
    if proxmox is not None:
        if proxmox.template.node not in proxmox.nodes:
            add("proxmox.template.node", f"unknown node {proxmox.template.node!r}; known nodes: {', '.join(sorted(proxmox.nodes))}")
        for node_name, u in usage(proxmox, hosts).items():
            node = proxmox.nodes[node_name]
            on_node = {n: h for n, h in hosts.items() if h.node == node_name}

            def biggest(field: str, on=on_node) -> str:
                top = sorted(on.items(), key=lambda kv: -getattr(kv[1], field))[:3]
                return "largest: " + ", ".join(f"hosts.{n}.{field} {getattr(h, field)}" for n, h in top)

            if u.vcpus.level == "over":
                add(
                    f"proxmox.nodes.{node_name}",
                    f"hosts on it ask for {u.vcpus.used} vCPUs but it offers {u.vcpus.offered} "
                    f"({node.cores} threads x vcpu_ratio {node.vcpu_ratio}); move or shrink hosts ({biggest('cores')})",
                    OVER_CAPACITY,
                )
            if u.memory_mb.level == "over":
                add(
                    f"proxmox.nodes.{node_name}",
                    f"hosts on it ask for {u.memory_mb.used} MiB RAM but it offers {u.memory_mb.offered} MiB "
                    f"(memory_mb {node.memory_mb} - reserved_memory_mb {node.reserved_memory_mb}); "
                    f"move or shrink hosts ({biggest('memory_mb')})",
                    OVER_CAPACITY,
                )
            for ds, su in u.storage.items():
                if su.level == "over":
                    disks = {n: h for n, h in on_node.items() if (h.datastore or proxmox.default_datastore) == ds}
                    add(
                        f"proxmox.nodes.{node_name}.storage.{ds}",
                        f"hosts on it ask for {su.used} GiB but it has {su.offered} GiB; "
                        f"move or shrink disks ({biggest('disk_gb', disks)})",
                        OVER_CAPACITY,
                    )


def _check_host_network(p: str, h: Host, network: Network, add) -> None:
    cidr = network.lan_cidr
    if h.lan_ip not in cidr:
        add(f"{p}.lan_ip", f"{h.lan_ip} is outside network.lan_cidr {cidr}; pick an address in {cidr}")
    elif h.lan_ip in (cidr.network_address, cidr.broadcast_address):
        add(f"{p}.lan_ip", f"{h.lan_ip} is the network or broadcast address of {cidr}")
    pub = network.public
    for field, net_field in (("public_ipv4", "ipv4_cidr"), ("public_ipv6", "ipv6_cidr")):
        ip = getattr(h, field)
        if ip is None:
            continue
        if pub is None:
            add(f"{p}.{field}", "this stack has no network.public; remove the address or add network.public")
            continue
        net = getattr(pub, net_field)
        if net is None:
            add(f"{p}.{field}", f"network.public.{net_field} is not set; add it or remove the address")
        elif ip not in net:
            add(f"{p}.{field}", f"{ip} is outside network.public.{net_field} {net}; pick an address in {net}")


def _check_services(hosts: dict[str, Host], declared_hosts: set[str], services: dict[str, Service], add) -> None:
    domain_owner: dict[str, str] = {}
    port_owner: dict[tuple[str, int], str] = {}
    has_proxy = bool(facts.proxies(hosts))
    for name, s in services.items():
        p = f"services.{name}"
        if not _HOSTNAME.fullmatch(name):
            add(p, "is not a valid service name (lower-case letters, digits and hyphens)")
        # A retired service may outlive its host: its names are answered by the proxy, not by it.
        if s.host not in declared_hosts and s.retired is None:
            add(f"{p}.host", f"unknown host {s.host!r}; known hosts: {', '.join(sorted(declared_hosts)) or 'none'}")
        for i, d in enumerate(s.domains):
            if d in domain_owner:
                add(f"{p}.domains[{i}]", f"{d} is already served by services.{domain_owner[d]}")
            domain_owner.setdefault(d, name)
        # A retired service's port is closed and free for another service on its host.
        if s.port is not None and s.retired is None:
            key = (s.host, s.port)
            if key in port_owner:
                add(f"{p}.port", f"{s.port} on {s.host} is already used by services.{port_owner[key]}")
            port_owner.setdefault(key, name)
        if s.public and s.reach != "lan":
            add(f"{p}.reach", "a public service is reached through the reverse proxy; remove `reach` or set `public: false`")
        if s.reach == "vpn" and s.port is None:
            add(f"{p}.reach", "only a service with a port can be limited to the VPN; give it a `port` or remove `reach`")
        if s.public and not s.domains:
            add(f"{p}.domains", "a public service needs at least one domain")
        if s.public and not has_proxy:
            add(f"{p}.public", "no host has the `reverse_proxy` role to publish it; add the role to a host")
        if s.shortlinks:
            if s.port is not None:
                add(f"{p}.port", "a shortlinks service is served by the proxy itself; remove the port")
            if s.host in hosts and "reverse_proxy" not in hosts[s.host].roles:
                add(f"{p}.host", f"{s.host!r} has no `reverse_proxy` role; shortlinks are served by the proxy host")
            if len(s.domains) != 1:
                add(f"{p}.domains", "a shortlinks service answers on exactly one domain, e.g. link.<domain>")

