"""The `mail` config section: what the host with role `mail` signs with and which addresses it accepts, and its checks.

The mail host is the domain's sender (every other host relays to it) and, when `dns.mx` names it,
its MX. It accepts only the addresses declared here plus the ones every domain must have:
postmaster and abuse (RFC 2142), root (the other hosts' cron and upgrade mail), and the DMARC
report addresses of `dns.dmarc.rua` inside the zone. Everything else is refused at RCPT time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Optional

from pydantic import AfterValidator, Field

from .base import _Model, check_email
from .errors import Problem
from .types import pattern_type, text_type, unique_items

if TYPE_CHECKING:
    from .dns import Dns
    from .stack import Host, Person, Site

ROLE = "mail"

# One DNS label: the selector is the first label of `<selector>._domainkey.<domain>` and the name
# of the key file on the host, so dots (allowed by RFC 6376) are refused to keep both one name.
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# A local part the co-op may hand out: lower-case, no quoting, no leading, trailing or double dot.
_LOCAL_PART = re.compile(r"[a-z0-9](?:[a-z0-9_+-]|\.(?!\.)){0,62}(?<!\.)")
_PERSON = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

# Local parts the mail host always accepts, routed by the program (not by `aliases`).
POSTMASTER = "postmaster"
ABUSE = "abuse"
ROOT = "root"
GENERATED = (POSTMASTER, ABUSE, ROOT)


def _target(value: str) -> str:
    if "@" in value:
        return check_email(value)
    if not _PERSON.fullmatch(value):
        raise ValueError(
            f"{value!r} is neither an email address (name@example.org) nor a person's name from `people`"
        )
    return value


Selector = pattern_type(
    "DKIM selector (one DNS label)", _LABEL.pattern,
    "is not a DNS label (lower-case letters, digits and inner hyphens, at most 63, no dots), e.g. mail2026", max_length=63,
)
LocalPart = pattern_type(
    "local part of an address", _LOCAL_PART.pattern,
    "is not a local part the mail host hands out (lower-case letters, digits and . _ + -, no leading, trailing or "
    "double dot, at most 64), e.g. board", max_length=64,
)
Target = text_type("email address or person", _target, max_length=254)
Targets = Annotated[list[Target], Field(min_length=1), AfterValidator(unique_items)]


class Mail(_Model):
    """Pulumi config key `hypha-infra:mail`: the mail host's DKIM key and the addresses it accepts."""

    dkim_selector: Selector = Field(
        description="The DKIM selector the mail host signs with (`s=`), e.g. `mail2026`. The program "
        "generates its key (RSA 2048) and publishes it at `<selector>._domainkey`; a new selector "
        "means a new key (README, Mail: rotating the DKIM key)."
    )
    retired_selectors: Annotated[list[Selector], AfterValidator(unique_items)] = Field(
        default_factory=list,
        description="Selectors of earlier keys: still published, no longer signing, so mail signed "
        "before a rotation still verifies. Remove one a week after the rotation (its key is destroyed).",
    )
    aliases: dict[LocalPart, Targets] = Field(
        default_factory=dict,
        description="Addresses at the domain and where their mail goes: local part to a list of email "
        "addresses or names of `people` (their `email`), e.g. `board: [alice, treasurer@example.org]`.",
    )
    postmaster: Annotated[list[Target], AfterValidator(unique_items)] = Field(
        default_factory=list,
        description="Where postmaster@, abuse@ and root@ (the hosts' own mail) go: email addresses or names "
        "of `people`; default the admins' (`access.admins`) addresses.",
    )


# --- what the catalog makes of it -------------------------------------------------------------


def mail_host(hosts: dict[str, "Host"]) -> Optional[str]:
    """The host with role `mail` (check_mail allows one), or None."""
    names = sorted(n for n, h in hosts.items() if ROLE in h.roles)
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
    mail_hosts = sorted(n for n, h in hosts.items() if ROLE in h.roles)
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


# prometheus-postfix-exporter on the mail host's LAN address, asked by the monitoring host only.
EXPORTER_PORT = 9154


def inbound_rules(stack, host: str) -> list:
    """Firewall allow rules (model.derive.Rule) the mail section adds to `host`: the Postfix
    exporter from the monitoring host. Port 25 is the role's public port (model/roles.py)."""
    from .derive import Rule, hosts_with_role

    if stack.mail is None or host != mail_host(stack.hosts):
        return []
    return [
        Rule("tcp", EXPORTER_PORT, f"{stack.hosts[mon].lan_ip}/32", f"postfix exporter from {mon}")
        for mon in hosts_with_role(stack, "monitoring")
    ]
