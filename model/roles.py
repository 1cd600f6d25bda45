"""The one list of host roles: each marked as converging (render/roles/ has its module) or a label,
with the ports it opens to the world (the firewalls open them; placement keeps services off them),
the exporters the monitoring host scrapes and the loopback ports its daemons hold.

A label-only role renders nothing; it only names what runs there (`web`, `app`). A test holds this
table and render/roles/__init__.py's registry equal both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import derive_monitoring, mail

CONVERGES = "converges"
LABEL = "label"


@dataclass(frozen=True)
class RoleFacts:
    kind: str
    """CONVERGES or LABEL."""
    public_ports: tuple[tuple[str, int, str], ...] = ()
    """(proto, port, comment) the role opens to the world, whatever the catalog says."""
    description: str = ""
    scraped_ports: tuple[tuple[int, str], ...] = ()
    """(TCP port, what listens) of its exporters on the host's LAN address: opened to the monitoring
    host alone once the stack is monitored (model/derive.py), and kept free of catalog services."""
    local_ports: tuple[tuple[int, str], ...] = ()
    """(TCP port, what listens) of its daemons on loopback: kept free of catalog services (model/placement.py)."""


ROLES: dict[str, RoleFacts] = {
    "gateway": RoleFacts(CONVERGES, (("tcp", 22, "ssh bastion"),), description="SSH bastion and WireGuard VPN"),
    "reverse_proxy": RoleFacts(
        CONVERGES, (("tcp", 80, "http (acme, redirect)"), ("tcp", 443, "https")), description="nginx with TLS for public services",
        scraped_ports=((derive_monitoring.MTAIL_PORT, "mtail"),),
    ),
    "web": RoleFacts(LABEL, description="label: runs web services of the catalog"),
    "dns": RoleFacts(CONVERGES, (("udp", 53, "dns"), ("tcp", 53, "dns")), description="authoritative BIND for the site's zone"),
    "backup_target": RoleFacts(CONVERGES, description="borg repositories of every data host"),
    "monitoring": RoleFacts(
        CONVERGES,
        description="Prometheus, Alertmanager and the exporters",
        # Prometheus and Alertmanager themselves (9090, 9093) are the UI services the catalog
        # publishes, so those stay free for services.
        local_ports=((derive_monitoring.BLACKBOX_PORT, "blackbox_exporter"), (derive_monitoring.PVE_EXPORTER_PORT, "prometheus-pve-exporter")),
    ),
    "app": RoleFacts(LABEL, description="label: runs application services of the catalog"),
    "mail": RoleFacts(
        CONVERGES,
        (("tcp", 25, "smtp (mx, starttls)"), ("tcp", 80, "http (acme http-01 for the mx name)")),
        description="Postfix MX and the stack's one sender, DKIM-signed (model/mail.py)",
        scraped_ports=((mail.EXPORTER_PORT, "postfix exporter"),),
        local_ports=((mail.OPENDKIM_PORT, "opendkim"), (mail.SRS_FORWARD_PORT, "postsrsd"),
                     (mail.SRS_REVERSE_PORT, "postsrsd")),
    ),
}

HOST_ROLES = tuple(ROLES)
"""Role names in documentation order."""


def converging() -> list[str]:
    return [name for name, facts in ROLES.items() if facts.kind == CONVERGES]


def public_ports(role: str) -> list[tuple[str, int, str]]:
    facts = ROLES.get(role)
    return list(facts.public_ports) if facts else []


def scraped_ports(role: str) -> list[tuple[int, str]]:
    facts = ROLES.get(role)
    return list(facts.scraped_ports) if facts else []


def held_ports(role: str) -> list[tuple[int, str]]:
    """TCP ports its daemons listen on besides the public ones: its exporters, then its loopback helpers."""
    facts = ROLES.get(role)
    return [*facts.scraped_ports, *facts.local_ports] if facts else []
