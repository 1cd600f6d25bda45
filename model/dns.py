"""The `dns` config section: the public zone's mail, CAA, name server and transfer settings.

Everything else in the zone (addresses of services, name servers, mail hosts) comes from the catalog
(`hosts`, `services`); this section only says what the catalog cannot. What the catalog makes of it
(name servers, mail targets, published addresses) is model/derive_dns.py; the checks that need the
rest of the stack are model/check_dns.py.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Any, Literal, Optional

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key, load_der_public_key
from pydantic import Field, field_validator, model_validator

from .keys import private_key_problem
from .base import _check_each, _Model, check_domain, check_email, validation_error
from .types import Domain, HostName, IpAddress as IpAddressField, IPv4Net, IPv6Net, LongText, text_type, whole

# A catalog host name, as model/checks.py accepts it; anything with a dot is a domain name instead.
_HOST_NAME = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")
# Owner names below the zone: letters, digits, hyphens, and underscores (service labels such as
# _dmarc or _github-challenge-hypha-org).
_OWNER_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_SELECTOR_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# What each free-form field of the section is, for the config reference; the validators below say
# what fits (each keeps its own message naming the fix). Control characters are refused by all.
MxTarget = text_type("host name or DNS name")
MailDomain = text_type("DNS name (labels may hold _)", max_length=253)
Selector = text_type("DKIM selector", max_length=253)
OwnerName = text_type("name in the zone, or @", max_length=253)
MailAddress = text_type("email address", max_length=261)
CaaDomain = text_type("DNS name", max_length=253)
IodefUrl = text_type("mailto: or https:// URL", max_length=2048)

# RFC 8301: verifiers must not accept RSA keys under 1024 bits.
DKIM_MIN_RSA_BITS = 1024
MAX_TTL = 604800


def check_mail_domain(value: str) -> str:
    """A domain as SPF and DMARC name it: like check_domain, but labels may hold `_` (e.g. _spf.google.com)."""
    if not isinstance(value, str) or value != value.strip().lower() or value.endswith("."):
        raise ValueError(f"{value!r} is not a valid domain name (write it lower-case, no trailing dot)")
    labels = value.split(".")
    if len(labels) < 2 or len(value) > 253 or not all(_OWNER_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{value!r} is not a valid domain name (at least two dot-separated labels of lower-case letters, "
            "digits, - and _)"
        )
    return value


class MxHost(_Model):
    host: MxTarget = Field(
        description="Mail server: a catalog host name (e.g. `lists`; it gets an address record in the zone) "
        "or the full domain name of an outside mail server (e.g. `mx1.mailbox.example`)."
    )
    priority: whole(ge=0, le=65535) = Field(default=10, description="MX preference; lower is tried first.")
    name: Optional[Domain] = Field(
        default=None,
        description="For a catalog host: the name inside the zone the MX record points at; default `mail.<site.domain>`.",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if isinstance(v, str) and _HOST_NAME.fullmatch(v):
            return v
        try:
            return check_domain(v)
        except ValueError:
            raise ValueError(
                f"{v!r} is neither a catalog host name (e.g. lists) nor a fully qualified domain name "
                "(e.g. mx1.mailbox.example); write one of those"
            ) from None

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= 65535:
            raise ValueError(f"{v} is not an MX priority; use a whole number from 0 to 65535 (lower is tried first), e.g. 10")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check_domain(v)


class Spf(_Model):
    include: list[MailDomain] = Field(
        default_factory=list,
        description="Domains whose SPF record also may send as us (`include:`), e.g. a newsletter provider's.",
    )
    ip4: list[IPv4Net] = Field(
        default_factory=list, description="Extra IPv4 addresses or networks allowed to send mail as us (`ip4:`)."
    )
    ip6: list[IPv6Net] = Field(
        default_factory=list, description="Extra IPv6 addresses or networks allowed to send mail as us (`ip6:`)."
    )
    qualifier: Literal["-all", "~all"] = Field(
        default="-all",
        description="What receivers do with mail from anywhere else: `-all` reject, `~all` mark as suspicious.",
    )

    @field_validator("include")
    @classmethod
    def _include(cls, domains: list[str]) -> list[str]:
        return _check_each("include", domains, check_mail_domain, "; write the domain alone, without `include:`")


def _is_der_private_key(raw: bytes) -> bool:
    """Whether `raw` is a private key (the DKIM signing key's DER, base64 pasted for the p= value)."""
    try:
        load_der_private_key(raw, password=None)
        return True
    except TypeError:  # an encrypted private key: still private
        return True
    except (ValueError, UnsupportedAlgorithm):
        return False


class Dkim(_Model):
    selector: Selector = Field(description="The DKIM selector the mail server signs with (`s=`), e.g. `mail2026`.")
    public_key: LongText = Field(
        description="The public key: the `p=` value of the key's TXT record (base64, without quotes or spaces). Not a secret."
    )
    key_type: Literal["rsa", "ed25519"] = Field(default="rsa", description="The key's algorithm (`k=`).")

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: str) -> str:
        if not all(_SELECTOR_LABEL.fullmatch(label) for label in v.split(".")):
            raise ValueError(
                f"{v!r} is not a DKIM selector (lower-case letters, digits and hyphens, dot-separated, e.g. mail2026)"
            )
        return v

    @model_validator(mode="after")
    def _key(self) -> "Dkim":
        try:
            raw = base64.b64decode(self.public_key, validate=True)
        except (binascii.Error, ValueError):
            raise validation_error(
                "Dkim",
                [(("public_key",), "is not base64; paste only the p= value of the DKIM record, without quotes, spaces or line breaks", self.public_key)],
            ) from None
        problem = None
        if _is_der_private_key(raw):
            problem = private_key_problem("PRIVATE KEY-----")
        elif self.key_type == "ed25519":
            if len(raw) != 32:
                problem = f"decodes to {len(raw)} bytes, not the 32 of an Ed25519 key; paste the p= value, or set key_type: rsa"
        else:
            try:
                key = load_der_public_key(raw)
            except ValueError:
                key = None
            if not isinstance(key, rsa.RSAPublicKey):
                problem = "is not an RSA public key (DER, base64); paste the p= value of the DKIM record, or set key_type: ed25519"
            elif key.key_size < DKIM_MIN_RSA_BITS:
                problem = (
                    f"is a {key.key_size}-bit RSA key; verifiers reject keys under {DKIM_MIN_RSA_BITS} bits (RFC 8301); "
                    "generate a 2048-bit key"
                )
        if problem:
            raise validation_error("Dkim", [(("public_key",), problem, self.public_key)])
        return self


class Dmarc(_Model):
    policy: Literal["none", "quarantine", "reject"] = Field(
        default="none",
        description="`p=`: what receivers do with mail that fails DMARC; start with `none`, read the reports, then raise it.",
    )
    subdomain_policy: Optional[Literal["none", "quarantine", "reject"]] = Field(
        default=None, description="`sp=`: the policy for subdomains; default the same as `policy`."
    )
    rua: list[MailAddress] = Field(
        default_factory=list,
        description="Addresses that receive aggregate reports (`rua=mailto:`); an address outside the zone must authorise it.",
    )
    pct: Optional[whole(ge=0, le=100)] = Field(
        default=None, description="`pct=`: the share of failing mail the policy applies to, in percent."
    )
    adkim: Optional[Literal["r", "s"]] = Field(default=None, description="`adkim=`: DKIM alignment, `r` relaxed or `s` strict.")
    aspf: Optional[Literal["r", "s"]] = Field(default=None, description="`aspf=`: SPF alignment, `r` relaxed or `s` strict.")

    @field_validator("rua")
    @classmethod
    def _rua(cls, addresses: list[str]) -> list[str]:
        def check(a: str) -> None:
            check_email(a.removeprefix("mailto:") if isinstance(a, str) else a)
            if a.startswith("mailto:"):
                raise ValueError(f"{a!r} starts with mailto:; write the address alone ({a.removeprefix('mailto:')})")

        return _check_each("rua", addresses, check)


class NameServer(_Model):
    name: Domain = Field(description="The name server's name in NS records, e.g. `ns1.hypha.coop`.")
    host: Optional[HostName] = Field(
        default=None,
        description="For a name inside the zone: the catalog host it points at (glue); default the host with role `dns`.",
    )


class ExtraRecord(_Model):
    name: OwnerName = Field(description="Owner name relative to the zone, e.g. `status` or `_github-challenge-hypha`; `@` for the apex.")
    type: Literal["CNAME", "TXT"] = Field(description="`CNAME` (an alias to another name) or `TXT`.")
    value: LongText = Field(description="CNAME: the target's full domain name. TXT: the text, printable ASCII.")
    ttl: Optional[whole(ge=60, le=MAX_TTL)] = Field(default=None, description="TTL in seconds; default `dns.ttl`.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v == "@":
            return v
        if v != v.lower() or v.endswith(".") or not all(_OWNER_LABEL.fullmatch(label) for label in v.split(".")):
            raise ValueError(
                f"{v!r} is not a name relative to the zone (lower-case labels of letters, digits, - and _, "
                "no trailing dot; `@` for the apex)"
            )
        return v

    @model_validator(mode="after")
    def _value(self) -> "ExtraRecord":
        problem = None
        if self.type == "CNAME":
            if self.name == "@":
                raise validation_error(
                    "ExtraRecord",
                    [(("name",), "a CNAME cannot be at the apex (it would hide SOA, NS and MX); publish the name as a service instead", self.name)],
                )
            try:
                check_domain(self.value)
            except ValueError as exc:
                problem = f"{exc}; a CNAME target is a full domain name"
        elif not self.value or not all(0x20 <= ord(c) <= 0x7E for c in self.value):
            problem = "a TXT value must be non-empty printable ASCII text (no line breaks, tabs or non-ASCII characters)"
        elif len(self.value) > 2048:
            problem = f"is {len(self.value)} characters; keep a TXT value under 2048"
        if problem:
            raise validation_error("ExtraRecord", [(("value",), problem, self.value)])
        return self


class Dns(_Model):
    """Pulumi config key `hypha-infra:dns`: what the zone says beyond the catalog."""

    ttl: whole(ge=60, le=MAX_TTL) = Field(default=3600, description="Default TTL of the zone's records, in seconds (`$TTL`).")
    soa_email: Optional[MailAddress] = Field(
        default=None, description="Contact address in the SOA record; default `hostmaster@<site.domain>`."
    )
    nameservers: list[NameServer] = Field(
        default_factory=list,
        description="The zone's NS records; default one, `ns1.<site.domain>`, on the host with role `dns`.",
    )
    secondaries: list[IpAddressField] = Field(
        default_factory=list,
        description="Addresses of secondary name servers: allowed to transfer the zone and notified of changes.",
    )
    mx: list[MxHost] = Field(
        default_factory=list,
        description="Mail servers for the domain; none publishes a null MX (`0 .`: this domain receives no mail).",
    )
    spf: Spf = Field(default_factory=Spf, description="The SPF record at the apex: `v=spf1 mx` plus these pieces.")
    dkim: list[Dkim] = Field(default_factory=list, description="DKIM public keys, one TXT record at `<selector>._domainkey` each.")
    dmarc: Dmarc = Field(default_factory=Dmarc, description="The DMARC record at `_dmarc`.")
    caa_issuers: list[CaaDomain] = Field(
        default_factory=lambda: ["letsencrypt.org"],
        min_length=1,
        description="Certificate authorities allowed to issue for the domain (CAA `issue`).",
    )
    caa_iodef: Optional[IodefUrl] = Field(
        default=None, description="Where CAs report refused requests (CAA `iodef`): a `mailto:` or `https://` URL."
    )
    extra_records: list[ExtraRecord] = Field(
        default_factory=list,
        description="Records the catalog cannot produce (site verifications, aliases to outside services); CNAME or TXT only.",
    )

    @field_validator("soa_email")
    @classmethod
    def _soa_email(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check_email(v)

    @field_validator("caa_issuers", mode="before")
    @classmethod
    def _some_issuer(cls, v: Any) -> Any:
        if v == []:
            raise ValueError(
                "is empty, so no CA could issue a certificate; name at least one (letsencrypt.org, which the ACME "
                "client of the reverse proxy uses)"
            )
        return v

    @field_validator("caa_issuers")
    @classmethod
    def _issuers(cls, issuers: list[str]) -> list[str]:
        return _check_each("caa_issuers", issuers, check_domain, "; name the CA's CAA domain, e.g. letsencrypt.org")

    @field_validator("caa_iodef")
    @classmethod
    def _iodef(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        if v.startswith("mailto:"):
            check_email(v.removeprefix("mailto:"))
        elif not re.fullmatch(r"https://[a-z0-9.-]+(:\d+)?(/[\x21-\x7e]*)?", v) or '"' in v:
            raise ValueError(f"{v!r} is not a mailto: or https:// URL (e.g. mailto:hostmaster@hypha.coop)")
        return v

    @field_validator("secondaries", mode="before")
    @classmethod
    def _secondaries(cls, values: Any) -> Any:
        if not isinstance(values, list):
            return values
        def check(v: Any) -> None:
            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise ValueError(
                    f"{v!r} is not an IP address; list secondaries by address (e.g. 192.0.2.53), not by name"
                ) from None

        return _check_each("secondaries", values, check)
