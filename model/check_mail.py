"""Checks of the `mail` section (model/mail.py) against the catalog and the zone: one mail host, the
MX it is has a public address (and ACME for its certificate), aliases that resolve, selectors apart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from . import facts
from .derive_mail import report_local_parts, signing_selectors
from .errors import Problem
from .mail import GENERATED, ROLE, Mail

if TYPE_CHECKING:
    from .dns import Dns
    from .stack import Host, Person, Site


def check_mail(
    mail: Optional[Mail],
    site: Optional["Site"],
    hosts: dict[str, "Host"],
    people: dict[str, "Person"],
    admins: Optional[list[str]],
    dns: Optional["Dns"],
    tls: Optional[object] = None,
) -> list[Problem]:
    """Cross-field checks of the mail section against the catalog and the zone."""
    out: list[Problem] = []
    add = lambda path, msg: out.append(Problem(path, msg))  # noqa: E731
    mail_hosts = facts.hosts_with_role(hosts, ROLE)
    if len(mail_hosts) > 1:
        add("hosts", f"{len(mail_hosts)} hosts have role `mail` ({', '.join(mail_hosts)}); one host sends and receives the domain's mail, keep the role on one")
    if mail is None:
        if mail_hosts:
            add(f"hosts.{mail_hosts[0]}.roles", "has role `mail` but there is no `mail` section (or it has problems, reported at mail); add mail: {dkim_selector: <e.g. mail2026>}")
        return out
    if not mail_hosts:
        return out  # nothing renders it; stacks made from another keep its section (bench/stackgen.py)
    host = mail_hosts[0]

    for i, sel in enumerate(mail.retired_selectors):
        if sel == mail.dkim_selector:
            add(f"mail.retired_selectors[{i}]", f"{sel!r} is the signing selector (mail.dkim_selector); a retired one must differ")
    if dns is not None:
        ours = set(signing_selectors(mail))
        for i, key in enumerate(dns.dkim):
            if key.selector in ours:
                add(f"dns.dkim[{i}].selector", f"{key.selector!r} is also a selector of the mail host, whose key the program publishes; remove this entry or pick another selector")

    reserved = set(GENERATED) | set(report_local_parts(dns, site.domain if site else ""))
    for name, targets in mail.aliases.items():
        if name in reserved:
            add(f"mail.aliases.{name}", f"{name}@ is routed by the program (postmaster, abuse, root, the DMARC report addresses); set mail.postmaster instead or pick another name")
        for i, t in enumerate(targets):
            _check_person(t, f"mail.aliases.{name}[{i}]", people, add)
    for i, t in enumerate(mail.postmaster):
        _check_person(t, f"mail.postmaster[{i}]", people, add)
    # An address at our own domain is delivered by this very host: it must be one it accepts.
    domain = site.domain if site else None
    accepted = reserved | set(mail.aliases)
    targets = [(f"mail.aliases.{n}[{i}]", t) for n, ts in mail.aliases.items() for i, t in enumerate(ts)]
    targets += [(f"mail.postmaster[{i}]", t) for i, t in enumerate(mail.postmaster)]
    if not mail.postmaster and admins is not None:
        targets += [(f"access.admins[{i}]", a) for i, a in enumerate(admins) if a in people and people[a].email]
    for path, t in targets:
        address = t if "@" in t else (people[t].email if t in people and people[t].email else None)
        if address and domain and address.rpartition("@")[2] == domain and address.rpartition("@")[0] not in accepted:
            why = "is where postmaster@ goes (mail.postmaster is empty), but " if path.startswith("access.") else ""
            add(path, f"{why}{address} is at {domain}, which only this mail host receives, and it accepts no {address.rpartition('@')[0]}@; add it to mail.aliases or name an outside address")
    if not mail.postmaster and admins is not None and not any(a in people and people[a].email for a in admins):
        add("mail.postmaster", "is empty and no admin (access.admins) has an email; name where postmaster@ and abuse@ mail goes")

    if dns is not None and site is not None:
        for i, mx in enumerate(dns.mx):
            if "." in mx.host or mx.host not in hosts:
                continue  # outside servers, unknown hosts: model/dns.py reports those
            h = hosts[mx.host]
            if ROLE not in h.roles:
                continue  # a mail server this program does not run (the web lab's MX is its gateway)
            if h.public_ipv4 is None and h.public_ipv6 is None:
                add(f"dns.mx[{i}].host", f"{mx.host} is the domain's MX but has no public address, so no one outside can deliver to it; give hosts.{mx.host} public_ipv4/public_ipv6")
            elif tls is None:
                add("tls", f"is required when {mx.host} is the MX (its STARTTLS certificate comes from ACME); add the section")
    return out


def _check_person(target: str, path: str, people: dict[str, "Person"], add) -> None:
    if "@" in target:
        return
    if target not in people:
        add(path, f"{target!r} is not an email address nor a person in `people`; write the address or add the person")
    elif not people[target].email:
        add(path, f"people.{target} has no email; add people.{target}.email or write the address")
