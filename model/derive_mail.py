"""What follows from the `mail` section (model/mail.py): the mail host, its selectors, where the
addresses it accepts go, and the firewall rule of its exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from . import facts
from .mail import EXPORTER_PORT, OPENDKIM_PORT, ROLE, SRS_FORWARD_PORT, SRS_REVERSE_PORT, Mail  # noqa: F401 (ports re-exported)

if TYPE_CHECKING:
    from .dns import Dns
    from .stack import Host, Person


def mail_host(hosts: dict[str, "Host"]) -> Optional[str]:
    """The host with role `mail` (check_mail allows one), or None."""
    names = facts.hosts_with_role(hosts, ROLE)
    return names[0] if names else None


def signing_selectors(mail: Optional[Mail]) -> list[str]:
    """Every selector whose key the zone publishes: the signing one first, then the retired ones."""
    return [] if mail is None else [mail.dkim_selector, *mail.retired_selectors]


def report_local_parts(dns: Optional["Dns"], domain: str) -> list[str]:
    """Local parts of the DMARC aggregate report addresses (`dns.dmarc.rua`) at the domain itself."""
    if dns is None:
        return []
    return sorted({a.rpartition("@")[0] for a in dns.dmarc.rua if a.rpartition("@")[2] == domain})


def resolve(targets: list[str], people: dict[str, "Person"]) -> list[str]:
    """Targets as addresses (a person's name becomes their email); expects a stack check_mail passed."""
    return sorted({t if "@" in t else people[t].email for t in targets})


def postmaster_addresses(mail: Mail, admins: list[str], people: dict[str, "Person"]) -> list[str]:
    targets = list(mail.postmaster) or [a for a in admins if a in people and people[a].email]
    return resolve(targets, people)
