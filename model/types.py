"""The strict value types of the config model: every field's type says what the value is, once, here.

Config arrives through pull requests, so every string is untrusted. Each type here refuses control
characters (C0, DEL, C1, Unicode line/paragraph separators), matches the whole value (`fullmatch`,
never a `$` that lets a trailing newline through) and says in its error what a valid value looks
like. Numbers are strict (`true` is not port 1, `1e308` is not a VM id) and addresses are parsed
from text only (`source: 0` is not 0.0.0.0). Models use these through `Annotated`; ops/docs.py
prints each type's `Kind` name in the config reference.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional, Union
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, Strict

from .base import check_domain, check_email
from .keys import private_key_problem

# Longest value quoted back in an error: a 50 MB value must not be echoed whole.
SHOWN = 60


def shown(value: Any) -> str:
    """`repr` of a value for an error message, cut to a short prefix."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(str(value))} characters)"


@dataclass(frozen=True)
class Kind:
    """What a value is, in words: the type column of the config reference (ops/docs.py)."""

    name: str


# C0 controls (NUL, tab, newline, CR ...), DEL, C1 controls, and U+2028/U+2029 which several
# parsers (YAML, JavaScript) treat as line breaks.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def no_control(value: str) -> str:
    match = _CONTROL.search(value)
    if match:
        raise ValueError(
            f"{shown(value)} holds the control character {match.group()!r} (position {match.start()}); "
            "remove it: a line break, tab or NUL in a value would split or end the line it is written to"
        )
    return value


def _what(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", dict: "a map", list: "a list", str: "text"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _text_only(value: Any) -> Any:
    # Before pydantic's own check, so a number or a boolean is named for what it is.
    if isinstance(value, bool) or isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is {_what(value)}, not text; write the value as text (in quotes)")
    return value


def _pattern(regex: str, problem: str) -> Callable[[str], str]:
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{shown(value)} {problem}")
        return value

    return check


def _at_most(limit: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        if len(value) > limit:
            raise ValueError(f"{shown(value)} is {len(value)} characters; at most {limit} fit here, shorten it")
        return value

    return check


def text_type(kind: str, *checks: Callable[[str], str], max_length: int = 255) -> Any:
    """A strict string: no control characters, at most `max_length`, then each check in order."""
    return Annotated[
        str,
        Kind(kind),
        BeforeValidator(_text_only),
        Strict(),
        AfterValidator(no_control),
        AfterValidator(_at_most(max_length)),
        *(AfterValidator(c) for c in checks),
    ]


def pattern_type(kind: str, regex: str, problem: str, max_length: int = 255) -> Any:
    return text_type(kind, _pattern(regex, problem), max_length=max_length)


# --- free text ---------------------------------------------------------------------------------

# Text with no structure of its own (an exclude pattern): still one line, still bounded.
Text = text_type("text (one line)")
# A base64 key or a TXT value: one line, but longer (a 4096-bit RSA key is 736 characters).
LongText = text_type("text (one line)", max_length=4096)

# Keys keep their own parser's messages (model/keys.py), which name the fix for each way a paste goes wrong.
SshPublicKey = Annotated[str, Kind("OpenSSH public key line"), BeforeValidator(_text_only), Strict()]
WireGuardKey = Annotated[str, Kind("WireGuard public key"), BeforeValidator(_text_only), Strict()]

# --- names -------------------------------------------------------------------------------------

Domain = text_type("DNS name", check_domain, max_length=253)
Email = text_type("email address", check_email, max_length=254)
# A catalog host or service name: one DNS label, as it appears in the LAN zone and the VM name.
HostName = pattern_type(
    "host name",
    r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?",
    "is not a host name (one DNS label: lower-case letters, digits and hyphens, starting with a letter, "
    "e.g. web1)",
    max_length=63,
)
# A Linux login on our own hosts: Debian's adduser NAME_REGEX (`^[a-z][-a-z0-9_]*$`), 32 at most as useradd allows.
UserName = pattern_type(
    "user name",
    r"[a-z_][a-z0-9_-]{0,31}",
    "is not a user name (lower-case letters, digits, _ and -, starting with a letter or _, at most 32)",
    max_length=32,
)
# A login on a server outside the stack (an offsite storage box: `u123456-sub1`): a little wider.
RemoteUser = pattern_type(
    "remote user name",
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}",
    "is not a user name (letters, digits, _ . and -, not starting with . or -, at most 64)",
    max_length=64,
)
Identifier = pattern_type(
    "name",
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}",
    "is not a name (letters, digits, _ . and -, not starting with . or -, at most 64)",
    max_length=64,
)
DatabaseName = pattern_type(
    "database name",
    r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}",
    "is not a database name (letters, digits, _ . -, at most 63), or `all`",
    max_length=63,
)
def _login(value: str) -> str:
    if "@" in value:
        return check_email(value)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", value):
        raise ValueError(
            f"{shown(value)} is not a login: an email address (alerts@hypha.coop) or a name of letters, digits, _ . -"
        )
    return value


# An SMTP login: usually the mailbox address, sometimes a bare account name.
Login = text_type("email address or login name", _login, max_length=254)
Version = pattern_type("release number", r"[0-9]+(\.[0-9]+)*", "is not a release number such as 3.10.2", max_length=32)

# --- Proxmox names, by Proxmox's own rules --------------------------------------------------------
# pve-common src/PVE/JSONSchema.pm: pve_verify_node_name, parse_id (storage ids, case-insensitive),
# parse_bridge_id, $PVE_TAG_RE; pve-access-control src/PVE/AccessControl.pm: verify_poolname,
# the realm and token-id patterns of pve-userid / pve-tokenid.

PveNode = pattern_type(
    "Proxmox node name",
    r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?",
    "is not a Proxmox node name (letters, digits and hyphens, not starting or ending with a hyphen)",
    max_length=63,
)
PveStorage = pattern_type(
    "Proxmox storage id",
    r"[a-zA-Z][a-zA-Z0-9_.-]*[a-zA-Z0-9]",
    "is not a Proxmox storage id (a letter, then letters, digits, - _ ., ending with a letter or digit, "
    "e.g. local-nvme)",
    max_length=64,
)
PvePool = pattern_type(
    "Proxmox pool id",
    r"[A-Za-z0-9._-]+",
    "is not a Proxmox pool id (letters, digits, . _ and - only, e.g. hypha-prod)",
    max_length=64,
)
PveTag = pattern_type(
    "Proxmox tag",
    r"[a-z0-9_][a-z0-9_+.-]*",
    "is not a Proxmox tag (lower-case letters, digits, _ + . -, not starting with + . or -)",
    max_length=64,
)


def _not_dots(value: str) -> str:
    if value in (".", ".."):
        raise ValueError(f"{shown(value)} is not an interface name")
    return value


# A Linux interface name (what Proxmox's pve-bridge-id `[-_.\w\d]+` names): at most 15 characters
# (IFNAMSIZ 16 with the NUL), never `.` or `..` (dev_valid_name in the kernel's net/core/dev.c).
Bridge = text_type(
    "bridge name",
    _pattern(r"[A-Za-z0-9_.-]{1,15}", "is not a Linux bridge name (1-15 letters, digits, _ . -, e.g. vmbr0)"),
    _not_dots,
    max_length=64,  # the pattern's own limit (15) comes with the better message
)
PveUser = pattern_type(
    "Proxmox user id",
    r"[A-Za-z0-9._-]{1,64}@[A-Za-z][A-Za-z0-9._-]{1,31}",
    "is not a Proxmox user id (`name@realm`, e.g. prometheus@pve)",
    max_length=97,
)
PveTokenName = pattern_type(
    "Proxmox API token name",
    r"[A-Za-z][A-Za-z0-9._-]{0,63}",
    "is not a Proxmox token name (a letter, then letters, digits, . _ -)",
    max_length=64,
)

# --- paths and URLs ------------------------------------------------------------------------------

_SEGMENT = r"[A-Za-z0-9_@+,=:~-][A-Za-z0-9_.@+,=:~-]*|\.[A-Za-z0-9_@+,=:~-][A-Za-z0-9_.@+,=:~-]*"


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{shown(value)} is not an absolute path; write it from / (e.g. /srv/loomio)")
    if value == "/" or not all(re.fullmatch(_SEGMENT, s) for s in value.split("/")[1:]):
        raise ValueError(
            f"{shown(value)} is not a normalised path of safe characters: each part letters, digits and "
            ". _ - @ + , = : ~ (no spaces, quotes or shell characters, no // or trailing /, no . or .. parts), "
            "e.g. /srv/loomio"
        )
    return value


# A directory on a host. The safe set leaves out spaces, quotes and every shell metacharacter, so a
# path is one word wherever it lands (borgmatic YAML, systemd units, authorized_keys command=).
AbsolutePath = text_type("absolute path", _absolute_path, max_length=1024)

# RFC 3986 path characters less the shell-significant sub-delimiters ($ & ' ( ) * ; !).
_URL_PATH = re.compile(r"/[A-Za-z0-9._~+,=:@%/-]*(\?[A-Za-z0-9._~+,=:@%/?-]*)?")


def _url_path(value: str) -> str:
    if not _URL_PATH.fullmatch(value):
        raise ValueError(
            f"{shown(value)} is not an HTTP path: it starts with / and holds only URL characters "
            "(letters, digits, - . _ ~ / and %-escapes; a ?query may follow), e.g. /healthz"
        )
    return value


UrlPath = text_type("HTTP path", _url_path, max_length=1024)


def _address_text(value: str) -> Optional[str]:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _host_part(host: str) -> bool:
    """A DNS name, a single host label, an IPv4 address, or a bracketed IPv6 address."""
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
            return True
        except ValueError:
            return False
    if re.fullmatch(r"[0-9.]+", host):
        return _address_text(host) is not None
    if re.fullmatch(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?", host):
        return True
    try:
        check_domain(host)
        return True
    except ValueError:
        return False


def url_type(kind: str, schemes: tuple[str, ...], example: str, what: str = "URL", query: bool = False) -> Any:
    # RFC 3986's characters less the sub-delimiters that are shell syntax ($ ; ( ) ' ! *): no API,
    # ACME directory or webhook address needs them. `&` only where a ?query may carry it.
    allowed = re.compile(r"[A-Za-z0-9._~:/?#\[\]@+,=%&-]+" if query else r"[A-Za-z0-9._~:/?#\[\]@+,=%-]+")

    def check(value: str) -> str:
        wrong = f"{shown(value)} is not an {' or '.join(f'{s}://' for s in schemes)} {what} (e.g. {example})"
        if not allowed.fullmatch(value):
            raise ValueError(
                f"{wrong}; it holds a character such an address never needs (space, quote, $ ; ( ) ! * ` "
                "\\ < > ^ { } |); remove it"
            )
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc or "@" in parts.netloc:
            raise ValueError(wrong)
        host, _, port = parts.netloc.rpartition(":") if not parts.netloc.endswith("]") else (parts.netloc, "", "")
        if not host:
            host, port = parts.netloc, ""
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"{wrong}; its port {port!r} is not 1-65535")
        if not _host_part(host.lower() if host.startswith("[") else host):
            raise ValueError(f"{wrong}; {host!r} is not a host name or address")
        return value

    return text_type(kind, check, max_length=2048)


ProxmoxEndpoint = url_type("https URL", ("https",), "https://kvm1.example.org:8006/", "API address")
AcmeDirectory = url_type(
    "https URL", ("https",), "https://acme-v02.api.letsencrypt.org/directory", "ACME directory URL"
)
HttpUrl = url_type("http(s) URL", ("https", "http"), "https://matrix.example.org/hook", query=True)
# Where a retired service's names send people (nginx `return 301`): https only, so a redirect
# never downgrades a member who arrived over HTTPS; a ?query may carry `&`.
HttpsUrl = url_type("https URL", ("https",), "https://meet.jit.si/", query=True)


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or len(port) > 5 or not _host_part(host):
        raise ValueError(
            f"{shown(value)} is not host:port (a DNS name, IPv4 address or [IPv6] address, a colon, "
            "a port 1-65535; e.g. smtp.example.org:587)"
        )
    return value


HostPort = text_type("host:port", _host_port, max_length=260)


def _host_or_address(value: str) -> str:
    if _address_text(value) is None and not _host_part(value):
        raise ValueError(
            f"{shown(value)} is neither an IP address nor a DNS name (e.g. borg.example.net or 192.0.2.7)"
        )
    return value


HostOrAddress = text_type("DNS name or IP address", _host_or_address, max_length=253)

# --- systemd and Prometheus time values ------------------------------------------------------------

# What the fallback accepts without systemd-analyze: `[weekday] *-*-* HH:MM[:SS]` and the shorthands.
_SIMPLE_CALENDAR = re.compile(
    r"((mon|tue|wed|thu|fri|sat|sun)([.][.](mon|tue|wed|thu|fri|sat|sun)|(,(mon|tue|wed|thu|fri|sat|sun))*) )?"
    r"(\*-\*-\* )?([01][0-9]|2[0-3]|\*):[0-5][0-9](:[0-5][0-9])?"
    r"|minutely|hourly|daily|weekly|monthly|yearly|annually|quarterly|semiannually",
    re.IGNORECASE,
)


@functools.lru_cache(maxsize=1024)
def _systemd_accepts(kind: str, value: str) -> Optional[bool]:
    """Whether `systemd-analyze <kind> -- value` parses it; None when systemd-analyze is not installed."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, kind, "--", value], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.returncode == 0


def _calendar(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9 *:,./~+_-]{1,128}", value):
        raise ValueError(
            f"{shown(value)} is not a systemd calendar event (letters, digits, spaces and * : , . / ~ - only), "
            "e.g. *-*-* 01:15 or Sun 01:30"
        )
    verdict = _systemd_accepts("calendar", value)
    if verdict is None and _SIMPLE_CALENDAR.fullmatch(value):
        return value
    if verdict is None:
        raise ValueError(
            f"{shown(value)} cannot be checked: systemd-analyze is not installed here, and without it only "
            "the simple forms `[Mon..Fri] *-*-* HH:MM[:SS]` and daily/weekly/... are accepted; install systemd "
            "or write it in a simple form, e.g. *-*-* 01:15"
        )
    if not verdict:
        raise ValueError(
            f"{shown(value)} is not a systemd calendar event (`systemd-analyze calendar` refuses it); "
            "write e.g. *-*-* 01:15 (daily at 01:15) or Sun 01:30 (see man systemd.time)"
        )
    return value


CalendarEvent = text_type("systemd calendar event", _calendar, max_length=128)

_SIMPLE_SPAN = re.compile(r"([0-9]+ ?(us|ms|s|sec|min|m|h|d|w))( ?[0-9]+ ?(us|ms|s|sec|min|m|h|d|w))*")


def _timespan(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9 .]{1,64}", value):
        raise ValueError(f"{shown(value)} is not a systemd time span (e.g. 20min, 1h 30min)")
    verdict = _systemd_accepts("timespan", value)
    if verdict is False or (verdict is None and not _SIMPLE_SPAN.fullmatch(value)):
        raise ValueError(
            f"{shown(value)} is not a systemd time span (`systemd-analyze timespan` refuses it); "
            "write e.g. 20min or 1h 30min (see man systemd.time)"
        )
    return value


TimeSpan = text_type("systemd time span", _timespan, max_length=64)


def _prometheus_duration(value: str) -> str:
    # Prometheus' model.ParseDuration: units ordered largest first, each once, not all zero.
    match = re.fullmatch(r"(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?", value)
    if not value or not match or not any(int(re.sub(r"\D", "", g)) for g in match.groups() if g):
        raise ValueError(f"{shown(value)} is not a duration such as 30s, 5m or 4h (Prometheus' form, above zero)")
    return value


Duration = text_type("duration (Prometheus)", _prometheus_duration, max_length=32)
_DURATION_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}


def duration_seconds(value: str) -> float:
    """A checked Duration in seconds (Prometheus' years are 365 days)."""
    return sum(int(n) * _DURATION_UNITS[u] for n, u in re.findall(r"(\d+)(ms|[ywdhms])", _prometheus_duration(value)))

# --- dates -----------------------------------------------------------------------------------------


def _iso_date(value: Any) -> Any:
    # Text only, like addresses: the stack files' loader keeps `2026-12-01` as text (no YAML 1.1
    # timestamps) and the engine hands config as JSON, so a date object here came from nowhere good.
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is {_what(value)}, not a date; write it as text YYYY-MM-DD, e.g. \"2026-12-01\"")
    no_control(value)
    # fromisoformat alone would also take 20261201 and 2026-W48-2 (Python 3.11): one spelling only.
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError(f"{shown(value)} is not a date written YYYY-MM-DD (year, month, day, e.g. 2026-12-01)")
    try:
        parsed = datetime.date.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{shown(value)} is not a day of the calendar (month 01-12, a day that month has); e.g. 2026-12-01"
        ) from None
    if parsed.year < 2000:
        raise ValueError(f"{shown(value)} is before 2000, older than anything this stack runs; check the year")
    return parsed


# A calendar day, ISO 8601 `YYYY-MM-DD`; the model holds a `datetime.date`.
IsoDate = Annotated[datetime.date, Kind("date (YYYY-MM-DD)"), BeforeValidator(_iso_date)]

# --- numbers ---------------------------------------------------------------------------------------


def _whole_number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number; write a whole number")
    if isinstance(value, float):
        raise ValueError(f"{shown(value)} is not a whole number; write it without a decimal point or exponent")
    if isinstance(value, str):
        raise ValueError(f"{shown(value)} is text, not a number; write the number without quotes")
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number; write a number such as 2.0")
    if isinstance(value, str):
        raise ValueError(f"{shown(value)} is text, not a number; write the number without quotes")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number; write a number such as 2.0")
    return value


def whole(kind: str = "int", **bounds: int) -> Any:
    """A strict integer with bounds: booleans, floats (`1e308`) and text are refused."""
    return Annotated[int, Kind(kind), BeforeValidator(_whole_number), Strict(), Field(**bounds)]


def number(**bounds: float) -> Any:
    """A finite float (ints accepted): `.inf`, `.nan`, booleans and text are refused."""
    return Annotated[float, Kind("number"), BeforeValidator(_finite), Strict(), Field(allow_inf_nan=False, **bounds)]


Port = whole("port", ge=1, le=65535)
def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError(f"{shown(value)} is {_what(value)}, not a boolean; write true or false")
    return value


# YAML 1.1's yes/on/1 and pydantic's lax "true" would all pass as True: only true and false do.
Flag = Annotated[bool, Kind("bool"), BeforeValidator(_boolean), Strict()]

# --- addresses -------------------------------------------------------------------------------------


def _address_from_text(parse: Callable[[str], Any], what: str, example: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network)):
            return parse(str(value))
        if not isinstance(value, str):
            raise ValueError(
                f"{shown(value)} is {_what(value)}, not an {what}; write it as text in quotes, e.g. \"{example}\""
            )
        no_control(value)
        # Python reads `addr%anything` as an IPv6 address with a scope id (a zone), and str() gives
        # the zone back: free text (`%n;touch x`) riding on an address into zones, firewalls and
        # units. No address here is link-local, so no zone is ever meant.
        if "%" in value:
            raise ValueError(f"{shown(value)} is not an {what}: it has a zone (%...); write the address without it")
        try:
            return parse(value)
        except ValueError as exc:
            raise ValueError(f"{shown(value)} is not an {what} ({exc}); e.g. {example}") from None

    return convert


def address_type(kind: str, cls: Any, what: str, example: str, parse: Optional[Callable[[str], Any]] = None) -> Any:
    # The converter hands pydantic an address object, so its strict check (an instance) always applies.
    return Annotated[cls, Kind(kind), BeforeValidator(_address_from_text(parse or cls, what, example))]


IPv4 = address_type("IPv4 address", ipaddress.IPv4Address, "IPv4 address", "203.0.113.50")
IPv6 = address_type("IPv6 address", ipaddress.IPv6Address, "IPv6 address", "2001:db8::50")
IPv4Net = address_type("IPv4 network (CIDR)", ipaddress.IPv4Network, "IPv4 network", "10.0.1.0/24")
IPv6Net = address_type("IPv6 network (CIDR)", ipaddress.IPv6Network, "IPv6 network", "2001:db8:1::/64")
IpAddressValue = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IpAddress = address_type(
    "IPv4 or IPv6 address", IpAddressValue, "IP address", "192.0.2.53 or 2001:db8::53", ipaddress.ip_address
)


def unique_items(values: list) -> list:
    """A list validator: the same item twice is an error at the second one."""
    seen = set()
    for i, v in enumerate(values):
        if v in seen:
            raise ValueError(f"{shown(v)} is listed twice (item {i}); remove the duplicate")
        seen.add(v)
    return values


def kind_of(annotation_metadata: list) -> Optional[str]:
    """The `Kind` name in a field's metadata (ops/docs.py), if the field's type is one of these."""
    return next((m.name for m in annotation_metadata if isinstance(m, Kind)), None)


# --- PEM -------------------------------------------------------------------------------------------

_PEM_CERTS = re.compile(r"(-----BEGIN CERTIFICATE-----\n([A-Za-z0-9+/=]{1,76}\n)+-----END CERTIFICATE-----\n?)+")


def _pem_certificates(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    leaked = private_key_problem(value)
    if leaked:
        raise ValueError(leaked)
    if not _PEM_CERTS.fullmatch(value):
        raise ValueError(
            f"{shown(value)} is not PEM certificates: one or more `-----BEGIN CERTIFICATE-----` blocks of base64 "
            "lines, nothing else (no comments, no carriage returns); paste the CA file unchanged"
        )
    return value


# The one multi-line value of the model: line breaks only between the PEM structure's own lines.
PemCertificates = Annotated[str, Kind("PEM certificates"), BeforeValidator(_pem_certificates), Strict(), Field(max_length=65536)]
