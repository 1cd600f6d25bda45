"""The `dns` config section: the public zone's mail, CAA, name server and transfer settings, and its checks.

Everything else in the zone (addresses of services, name servers, mail hosts) comes from the catalog
(`hosts`, `services`); this section only says what the catalog cannot. `check_dns` runs the checks
that need the rest of the stack, so it takes the parsed parts like `model/checks.py` does.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key, load_der_public_key
from pydantic import Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, Problem, problems_from
from .keys import private_key_problem
from .base import _check_each, _Model, check_domain, check_email, validation_error
from .types import Domain, HostName, IpAddress as IpAddressField, IPv4Net, IPv6Net, LongText, text_type, whole

if TYPE_CHECKING:  # the stack model holds a Dns; only names from it are needed here
    from .stack import Host, Network, Service, Site, Stack

IpAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

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

# RFC 7208 section 4.6.4: at most 10 mechanisms that cost a DNS lookup (`mx` and each include).
SPF_MAX_LOOKUPS = 10
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


# --- what the catalog makes of it -------------------------------------------------------------


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


def dns_hosts(hosts: dict[str, Host]) -> list[str]:
    return sorted(n for n, h in hosts.items() if "dns" in h.roles)


def nameserver_host(ns: NameServer, hosts: dict[str, Host]) -> Optional[str]:
    """The catalog host an in-zone name server's glue points at (the one `dns` host unless named)."""
    if ns.host is not None:
        return ns.host
    candidates = dns_hosts(hosts)
    return candidates[0] if len(candidates) == 1 else None


def mx_name(mx: MxHost, zone: str) -> str:
    """The name the MX record points at: the outside server's, or the in-zone name of a catalog host."""
    if "." in mx.host:
        return mx.host
    return mx.name or f"mail.{zone}"


def front_host(hosts: dict[str, Host]) -> Optional[str]:
    """The reverse proxy public services are reached through (the first, as derive.public_endpoints)."""
    proxies = sorted(n for n, h in hosts.items() if "reverse_proxy" in h.roles)
    return proxies[0] if proxies else None


def _address_claims(dns: Dns, zone: str, hosts: dict[str, Host], services: dict[str, Service]):
    """(in-zone name, key path, catalog host) for every name the zone must give an address."""
    front = front_host(hosts)
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

    if not dns_hosts(hosts):
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
            found = dns_hosts(hosts)
            if found:  # none at all is reported above
                add(
                    ns_path,
                    f"{ns.name} could be any of the hosts with role `dns` ({', '.join(found)}); set host to the one it names",
                )
        else:
            needs_addresses(f"{path}.host" if ns.host else ns_path, host, f"the name server {ns.name}")

    # Mail: catalog hosts must exist and be reachable; in-zone outside names must have an address here.
    claims = {name for name, _, _ in _address_claims(dns, zone, hosts, services)}
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
    for name, path, host in _address_claims(dns, zone, hosts, services):
        if host not in hosts:
            continue
        ips = tuple(str(ip) for ip in published_addresses(network, hosts[host]))
        if name in addresses and addresses[name][0] != ips:
            add(path, f"{name} already gets other addresses from {addresses[name][1]}; pick another name")
        addresses.setdefault(name, (ips, path))

    front = front_host(hosts)
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
