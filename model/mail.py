"""The `mail` config section: what the host with role `mail` signs with and which addresses it accepts.

The mail host is the domain's sender (every other host relays to it) and, when `dns.mx` names it,
its MX. It accepts only the addresses declared here plus the ones every domain must have:
postmaster and abuse (RFC 2142), root (the other hosts' cron and upgrade mail), and the DMARC
report addresses of `dns.dmarc.rua` inside the zone. Everything else is refused at RCPT time.
What follows from it: model/derive_mail.py; its checks against the catalog: model/check_mail.py.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from .base import _Model, check_email
from .types import pattern_type, text_type, unique_items

ROLE = "mail"
# prometheus-postfix-exporter on the mail host's LAN address, asked by the monitoring host only.
EXPORTER_PORT = 9154
# Where the mail host's helpers listen: loopback only, Postfix is their one client.
OPENDKIM_PORT = 8891
SRS_FORWARD_PORT = 10001
SRS_REVERSE_PORT = 10002

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
