"""The public zone (records, BIND zone file, serial rule) and the BIND config that serves it, from the catalog."""

from __future__ import annotations

import hashlib
import re
from datetime import date
from typing import Optional

from model.derive_dns import in_zone, mx_name, nameserver_host, nameservers, published_addresses
from model.dns import Dns
from model.facts import front_host
from model.stack import Stack

from .. import quote
from .. import gather
from ..plan import DeriveStep, HostPlan, ManagedFile, Record, Role
from ..templates import render

# Where things live on the dns host. The body is the managed file (converge compares its hash, the
# drift check compares it); the live zone is the body with its serial set, written by zone-serial.sh.
BODY_DIR = "/etc/bind/hypha"
LIVE_DIR = "/var/lib/bind"
SERIAL_SCRIPT = "/usr/local/lib/hypha-infra/zone-serial.sh"
NAMED_CONF_LOCAL = "/etc/bind/named.conf.local"
NAMED_CONF_OPTIONS = "/etc/bind/named.conf.options"
PACKAGES = ["bind9"]
UNIT = "named"

# SOA timers. NOTIFY brings secondaries up to date at once; refresh is the fallback when a notify is
# lost, and expire is long so a secondary keeps answering through a long outage of the primary.
SOA_REFRESH = 14400
SOA_RETRY = 3600
SOA_EXPIRE = 1209600
SOA_NEGATIVE_TTL = 3600
# Responses per second per client network before BIND's response rate limiting slows it down.
RATE_LIMIT = 10

# The managed body carries this serial; the host replaces it on the one line ending in the marker.
BODY_SERIAL = 0
SERIAL_MARKER = "; serial"
_SERIAL_LINE = r"^[ \t]*[0-9]+[ \t]*; serial$"
_SERIAL_SUB = re.compile(r"^([ \t]*)[0-9]+([ \t]*; serial)$", re.M)
MAX_SERIAL = 2**32 - 1

# named-checkzone as the converge and the tests run it: integrity problems (missing glue, an MX or NS
# without an address, a CNAME beside other data) fail; `-i local` checks in-zone names only, so the
# check never looks anything up on the network.
CHECKZONE_ARGS = ["-k", "fail", "-m", "fail", "-M", "fail", "-n", "fail", "-S", "fail", "-i", "local"]

# Record types in the order they are written at one name.
_TYPE_ORDER = {"SOA": 0, "NS": 1, "A": 2, "AAAA": 3, "CNAME": 4, "MX": 5, "TXT": 6, "CAA": 7}
# A TXT character-string holds at most 255 bytes on the wire (RFC 1035 section 3.3).
TXT_CHUNK = 255


def zone_name(stack: Stack) -> str:
    return stack.site.domain


def body_path(zone: str) -> str:
    return f"{BODY_DIR}/{zone}.zone"


def live_path(zone: str) -> str:
    return f"{LIVE_DIR}/{zone}.zone"


def txt_data(text: str) -> str:
    """A TXT value in zone-file syntax: quoted strings of at most 255 bytes each, escaped."""
    raw = text.encode("ascii")
    chunks = [raw[i : i + TXT_CHUNK] for i in range(0, len(raw), TXT_CHUNK)] or [b""]
    # Escapes are zone-file syntax, not wire bytes, so they are added after the split.
    return " ".join('"' + c.decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def _fqdn(name: str) -> str:
    return f"{name}."


def rname(email: str) -> str:
    """The SOA mailbox: `first.last@example.org` becomes `first\\.last.example.org.`."""
    local, _, domain = email.rpartition("@")
    return f"{local.replace('.', chr(92) + '.')}.{domain}."


def spf_text(dns: Dns) -> str:
    terms = ["v=spf1"]
    if dns.mx:
        terms.append("mx")
    terms += [f"include:{d}" for d in dns.spf.include]
    for net in (*dns.spf.ip4, *dns.spf.ip6):
        addr = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        terms.append(f"ip{net.version}:{addr}")
    terms.append(dns.spf.qualifier)
    return " ".join(terms)


def dmarc_text(dns: Dns) -> str:
    d = dns.dmarc
    tags = [("v", "DMARC1"), ("p", d.policy)]
    if d.subdomain_policy:
        tags.append(("sp", d.subdomain_policy))
    if d.pct is not None:
        tags.append(("pct", str(d.pct)))
    if d.adkim:
        tags.append(("adkim", d.adkim))
    if d.aspf:
        tags.append(("aspf", d.aspf))
    if d.rua:
        tags.append(("rua", ",".join(f"mailto:{a}" for a in d.rua)))
    return "; ".join(f"{k}={v}" for k, v in tags)


def dkim_text(key_type: str, public_key: str) -> str:
    return f"v=DKIM1; k={key_type}; p={public_key}"


def _addresses(stack: Stack, name: str, host: str, ttl: int) -> list[Record]:
    return [
        Record(name, "A" if ip.version == 4 else "AAAA", str(ip), ttl)
        for ip in published_addresses(stack.network, stack.hosts[host])
    ]


def out_of_zone_domains(stack: Stack) -> list[str]:
    """Public service domains this zone does not hold (served by another zone), for the plan to list."""
    zone = zone_name(stack)
    return sorted(d for s in stack.services.values() if s.public for d in s.domains if not in_zone(d, zone))


def zone_records(stack: Stack, dns: Dns) -> list[Record]:
    """Every record of the zone, generated from the catalog plus the dns section, in zone-file order.

    Expects a stack and dns section that passed model.check_dns.check_dns. Public service domains outside
    the zone are left out (see out_of_zone_domains); services that are not public get no record.
    """
    zone = zone_name(stack)
    ttl = dns.ttl
    servers = nameservers(dns, zone)
    soa_email = dns.soa_email or f"hostmaster@{zone}"
    records = [
        Record(
            zone,
            "SOA",
            f"{_fqdn(servers[0].name)} {rname(soa_email)} {BODY_SERIAL} {SOA_REFRESH} {SOA_RETRY} {SOA_EXPIRE} {SOA_NEGATIVE_TTL}",
            ttl,
        )
    ]
    records += [Record(zone, "NS", _fqdn(ns.name), ttl) for ns in servers]

    # Names with addresses: glue for in-zone name servers, in-zone mail servers from the catalog,
    # and every public service domain at the reverse proxy. check_dns made sure no name gets two
    # different sets; the same name asked for twice (a name server that is also the mail host) is one.
    addressed: dict[str, str] = {}
    for ns in servers:
        if in_zone(ns.name, zone):
            addressed.setdefault(ns.name, nameserver_host(ns, stack.hosts))
    for mx in dns.mx:
        if "." not in mx.host:
            addressed.setdefault(mx_name(mx, zone), mx.host)
    front = front_host(stack.hosts)
    for svc in stack.services.values():
        if svc.public and front is not None:
            for d in svc.domains:
                if in_zone(d, zone):
                    addressed.setdefault(d, front)
    for name, host in addressed.items():
        records += _addresses(stack, name, host, ttl)

    if dns.mx:
        records += [Record(zone, "MX", f"{mx.priority} {_fqdn(mx_name(mx, zone))}", ttl) for mx in dns.mx]
    else:
        # RFC 7505 null MX: this domain receives no mail, so senders fail fast instead of queueing.
        records.append(Record(zone, "MX", "0 .", ttl))
    records.append(Record(zone, "TXT", txt_data(spf_text(dns)), ttl))
    for key in dns.dkim:
        records.append(Record(f"{key.selector}._domainkey.{zone}", "TXT", txt_data(dkim_text(key.key_type, key.public_key)), ttl))
    records.append(Record(f"_dmarc.{zone}", "TXT", txt_data(dmarc_text(dns)), ttl))
    records += [Record(zone, "CAA", f'0 issue "{issuer}"', ttl) for issuer in dns.caa_issuers]
    if dns.caa_iodef:
        records.append(Record(zone, "CAA", f'0 iodef "{dns.caa_iodef}"', ttl))

    for extra in dns.extra_records:
        name = zone if extra.name == "@" else f"{extra.name}.{zone}"
        data = _fqdn(extra.value) if extra.type == "CNAME" else txt_data(extra.value)
        records.append(Record(name, extra.type, data, extra.ttl or ttl))
    return sorted(set(records), key=lambda r: _order(r, zone))


def _order(r: Record, zone: str):
    # Apex first, then names in DNS canonical order (compared label by label from the right).
    relative = r.name.removesuffix(zone).rstrip(".")
    labels = tuple(reversed(relative.split("."))) if relative else ()
    return (labels, _TYPE_ORDER[r.type], r.data)


def render_zone(records: list[Record], serial: int) -> str:
    """The BIND zone file for `records` with SOA serial `serial` (BODY_SERIAL gives the managed body)."""
    if not 0 <= serial <= MAX_SERIAL:
        raise ValueError(f"serial {serial} is outside 0..{MAX_SERIAL}")
    soa = next(r for r in records if r.type == "SOA")
    zone = soa.name
    mname, rname_, _serial, refresh, retry, expire, negative = soa.data.split()

    def owner(name: str) -> str:
        return "@" if name == zone else name.removesuffix(f".{zone}")

    rest = [r for r in records if r.type != "SOA"]
    width = max([len(owner(r.name)) for r in records] + [1])
    # A TTL column only where some record does not use the zone's $TTL.
    ttls = [str(r.ttl) if r.ttl != soa.ttl else "" for r in rest]
    ttl_width = max(len(t) for t in ttls) if rest else 0
    lines = [
        f"{owner(r.name):<{width}} {ttl:>{ttl_width}}{' ' if ttl_width else ''}IN {r.type:<5} {r.data}"
        for r, ttl in zip(rest, ttls)
    ]
    return render(
        "dns/zone.db.j2",
        zone=zone,
        ttl=soa.ttl,
        soa_owner=f"{'@':<{width}} {'':>{ttl_width}}{' ' if ttl_width else ''}",
        mname=mname,
        rname=rname_,
        indent="\t\t\t",
        serial=serial,
        refresh=refresh,
        retry=retry,
        expire=expire,
        negative=negative,
        lines=lines,
    )


def zone_body(stack: Stack, dns: Dns) -> str:
    """The managed zone file: serial BODY_SERIAL, so it changes only when a record does. Besides the
    catalog's records it holds what other roles publish (render/gather.py), such as the mail host's
    DKIM keys, which exist only once the program runs (late values)."""
    zone = zone_name(stack)
    records = sorted(set(zone_records(stack, dns) + gather.zone_records(stack)), key=lambda r: _order(r, zone))
    return render_zone(records, BODY_SERIAL)


def set_serial(zone_text: str, serial: int) -> str:
    """The zone with `serial` on its serial line; what zone-serial.sh writes on the host."""
    out, n = _SERIAL_SUB.subn(rf"\g<1>{serial}\g<2>", zone_text)
    if n != 1:
        raise ValueError(f"the zone has {n} serial lines; it needs exactly one ending in {SERIAL_MARKER!r}")
    return out


def body_sha256(zone_text: str) -> str:
    """sha256 of a zone with its serial put back to BODY_SERIAL: equal exactly when the records are."""
    return hashlib.sha256(set_serial(zone_text, BODY_SERIAL).encode()).hexdigest()


def serial_of(zone_text: str) -> int:
    match = re.search(_SERIAL_LINE, zone_text, re.M)
    if match is None:
        raise ValueError(f"the zone has no line ending in {SERIAL_MARKER!r}")
    return int(match.group(0).split()[0])


def next_serial(previous_serial: Optional[int], previous_body_sha: Optional[str], body: str, today: date) -> int:
    """The serial for `body`: YYYYMMDDnn, changed exactly when the body's hash differs, never backwards.

    `previous_serial` and `previous_body_sha` describe the zone that is live now (None or 0 when
    there is none yet); zone-serial.sh implements the same rule on the host.
    """
    if previous_serial and previous_body_sha == body_sha256(body):
        return previous_serial
    floor = int(today.strftime("%Y%m%d")) * 100
    if previous_serial and previous_serial >= floor:
        return previous_serial + 1
    return floor


def named_conf_local(stack: Stack, dns: Dns, zone_file: Optional[str] = None) -> str:
    zone = zone_name(stack)
    return render(
        "dns/named.conf.local.j2",
        zone=zone,
        zone_file=zone_file or live_path(zone),
        secondaries=[str(ip) for ip in dns.secondaries],
    )


def named_conf_options() -> str:
    return render("dns/named.conf.options.j2", rate_limit=RATE_LIMIT)


def serial_script() -> str:
    return render("dns/zone-serial.sh.j2", marker=SERIAL_MARKER, serial_line_awk=_SERIAL_LINE)


def dns_files(stack: Stack, dns: Dns) -> list:
    """The files the `dns` role adds to a host plan (render.plan.ManagedFile).

    The zone body reloads nothing by itself: the converge runs zone-serial.sh after the swap and
    reloads named when it prints `changed`.
    """
    zone = zone_name(stack)
    return [
        ManagedFile(NAMED_CONF_OPTIONS, named_conf_options(), group="bind", unit=UNIT, check="named-checkconf"),
        ManagedFile(NAMED_CONF_LOCAL, named_conf_local(stack, dns), group="bind", unit=UNIT, check="named-checkconf"),
        ManagedFile(body_path(zone), zone_body(stack, dns), check="named-checkzone"),
        ManagedFile(SERIAL_SCRIPT, serial_script(), mode="0755", check="shell"),
    ]


NAME = "dns"


def contribute(stack: Stack, host: str, plan: HostPlan) -> None:
    """BIND serving the site's zone; the zone's serial is derived on the host after the swap."""
    if stack.dns is None:
        return
    plan.files += dns_files(stack, stack.dns)
    plan.packages += PACKAGES
    plan.units += [UNIT]
    zone = zone_name(stack)
    plan.derive.append(
        DeriveStep(f"zone {zone}", quote.sh_join([SERIAL_SCRIPT, body_path(zone), live_path(zone)]), UNIT)
    )


ROLE = Role(NAME, contribute, bare_units=("named.service",), packages=tuple(PACKAGES))
