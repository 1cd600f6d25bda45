"""The facts every layer asks of a stack ("which host is the gateway", "what runs on this host", "does
it hold data", "which host is the backup target"), each answered once.

They take the plain mappings a stack is made of (host name -> Host, service name -> Service) rather
than a `Stack`, so one answer serves a validated stack (pass `stack.hosts`) and the cross-field checks
on partly parsed config, where entries that failed to parse are missing (a service may name a host
that is not in the mapping). Only attributes are read, so this module imports nothing: it sits below
every other module of model/ and may be imported from anywhere.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional


def hosts_with_role(hosts: Mapping[str, Any], role: str) -> list[str]:
    """Names of the hosts with `role`, sorted (the order every "first such host" below picks from)."""
    return sorted(name for name, h in hosts.items() if role in h.roles)


def gateway_name(hosts: Mapping[str, Any]) -> Optional[str]:
    """The SSH bastion and VPN gateway: the one host with role `gateway`, or None where there is not
    exactly one (model/checks.py refuses such a stack, so a validated one always has it)."""
    gateways = hosts_with_role(hosts, "gateway")
    return gateways[0] if len(gateways) == 1 else None


def proxies(hosts: Mapping[str, Any]) -> list[str]:
    """The reverse proxies, sorted."""
    return hosts_with_role(hosts, "reverse_proxy")


def front_host(hosts: Mapping[str, Any]) -> Optional[str]:
    """The reverse proxy public services are reached through (the first, when there are several)."""
    found = proxies(hosts)
    return found[0] if found else None


def monitoring_host(hosts: Mapping[str, Any]) -> Optional[str]:
    """The host with role `monitoring` (the checks allow one), or None."""
    found = hosts_with_role(hosts, "monitoring")
    return found[0] if found else None


def dns_hosts(hosts: Mapping[str, Any]) -> list[str]:
    """The hosts that run the zone's authoritative BIND, sorted."""
    return hosts_with_role(hosts, "dns")


def services_on(services: Mapping[str, Any], host: str) -> dict:
    """The catalog's services that run on `host`, by name."""
    return {name: s for name, s in services.items() if s.host == host}


def holds_data(hosts: Mapping[str, Any], services: Mapping[str, Any], host: str) -> bool:
    """Whether `host` keeps state worth backing up and protecting: its own flag, or a service on it
    with data paths or a database (a declared database is data too: it is dumped into each backup)."""
    h = hosts.get(host)
    return bool(h is not None and h.holds_data) or any(s.data_paths or s.databases for s in services_on(services, host).values())


def backup_target(backup: Any, hosts: Mapping[str, Any]) -> Optional[str]:
    """The borg target: `backup.target` as written, else the one host with role `backup_target`.

    None without a backup section, or when no single host has the role. A named target is returned
    even when it is not (or not yet) in `hosts`: the checks report that, by name.
    """
    if backup is None:
        return None
    if backup.target:
        return backup.target
    targets = hosts_with_role(hosts, "backup_target")
    return targets[0] if len(targets) == 1 else None


def backup_clients(hosts: Mapping[str, Any], services: Mapping[str, Any], target: Optional[str]) -> list[str]:
    """Hosts backed up with borg to `target`: every host holding data except the target itself.

    The target's own state is the repositories, copied offsite; backing it up to itself would
    protect nothing, and its config is rebuilt by a converge.
    """
    return sorted(name for name in hosts if name != target and holds_data(hosts, services, name))
