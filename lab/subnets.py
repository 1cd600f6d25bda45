"""The one table of lab names and address ranges: every lab (a test module's, a bench's, the demo) by prefix.

Labs of different prefixes may run at the same time on one machine (eight engineers share it), so
no two may share a range: `Lab.up` refuses ranges already routed here, and this table refuses
overlaps before anything runs (tests/test_subnets.py). A new lab takes a free prefix and free
/24s here, then asks `subnets(prefix)` for its networks; nothing else writes a 10.213.x range.

Every range is a /24 in 10.213.0.0/16: lab-own, never in committed config (10.0.x.0/24,
203.0.113.0/24), never routed off this machine. A lab's ranges are, in order: front ("the
internet": the root namespace, the gateway's public side, clients), LAN, VPN, then any spare ones
the lab uses as it likes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")  # no '-', so `<prefix>-` never matches another lab
SPACE = ipaddress.ip_network("10.213.0.0/16")

# prefix -> the third octets of its /24s (front, LAN, VPN, spare...), and who uses it.
TABLE: dict[str, tuple[tuple[int, ...], str]] = {
    "demo": ((0, 1, 9), "`python -m lab up` / `make lab` (the CLI's defaults)"),
    "hcv": ((3, 4, 5), "tests/test_converge_lab.py"),
    "hvp": ((10, 11, 12), "tests/test_vpn_lab.py"),
    "tlab": ((20, 21), "tests/test_lab.py, the shared lab"),
    "tlabx": ((22, 23), "tests/test_lab.py, a one-host lab torn down twice"),
    "tlabc": ((24, 25), "tests/test_lab.py, the CLI run as a person runs it"),
    "tlabf": ((26, 27), "tests/test_lab.py, a lab that fails to come up"),
    "hbench": ((40, 41, 42), "bench/converge.py"),
    "hweb": ((60, 61, 62), "tests/test_web_lab.py (lab.stack.web_lab_stack)"),
    "hbk": ((70, 71, 72), "tests/test_backup_lab.py, bench/backup.py (lab.backup.DEFAULT)"),
    "hmo": ((80, 81, 82), "tests/test_monitoring_lab.py"),
    "hdr": ((90, 91, 92), "tests/test_drift_lab.py"),
    "hds": ((100, 101, 102), "bench/drift_scale.py"),
    "tmitm": ((120, 121, 122), "tests/test_hostkey_lab.py"),
    "tfirst": ((125, 126, 127), "tests/test_first_converge_lab.py"),
    "tbatk": ((130, 131, 132), "tests/test_backup_attack_lab.py"),
    "tspoof": ((135, 136, 137), "tests/test_spoof_lab.py"),
    "thard": ((138, 139, 140), "tests/test_hardening_lab.py"),
    "tdep": ((144, 145, 146), "tests/test_deploy_source_lab.py"),
    # Reserved for labs being written now (issue 14's parallel work): mail, inventory, retiring hosts.
    "tmail": ((150, 151, 152, 153, 154), "the mail role's lab"),
    "tinv": ((160, 161, 162, 163, 164), "the inventory lab"),
    "tret": ((170, 171, 172, 173, 174), "tests/test_retire_lab.py (retired services on the web edge)"),
}


class SubnetError(ValueError):
    """The table is inconsistent (overlap, bad prefix, outside the lab's space) or a lab is not in it."""


@dataclass(frozen=True)
class LabSubnets:
    """One lab's ranges, by what it uses them for."""

    prefix: str
    nets: tuple[ipaddress.IPv4Network, ...]
    used_by: str

    @property
    def front(self) -> ipaddress.IPv4Network:
        return self.nets[0]

    @property
    def lan(self) -> ipaddress.IPv4Network:
        return self.nets[1]

    @property
    def vpn(self) -> ipaddress.IPv4Network:
        if len(self.nets) < 3:
            raise SubnetError(f"lab {self.prefix} has no VPN range in lab/subnets.py")
        return self.nets[2]

    @property
    def spare(self) -> tuple[ipaddress.IPv4Network, ...]:
        return self.nets[3:]


def check(table: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, LabSubnets]:
    """The table as LabSubnets by prefix; SubnetError when a prefix is malformed or two ranges overlap."""
    labs: dict[str, LabSubnets] = {}
    owner: dict[ipaddress.IPv4Network, str] = {}
    for prefix, (octets, used_by) in table.items():
        if not PREFIX_RE.match(prefix):
            raise SubnetError(f"lab prefix {prefix!r} must match {PREFIX_RE.pattern}")
        if len(octets) < 2:
            raise SubnetError(f"lab {prefix}: needs at least a front and a LAN range, got {octets!r}")
        nets = []
        for octet in octets:
            if not (isinstance(octet, int) and 0 <= octet <= 255):
                raise SubnetError(f"lab {prefix}: {octet!r} is not a third octet of {SPACE}")
            net = ipaddress.ip_network(f"10.213.{octet}.0/24")
            if net in owner:
                raise SubnetError(f"lab {prefix}: {net} is already lab {owner[net]}'s")
            owner[net] = prefix
            nets.append(net)
        labs[prefix] = LabSubnets(prefix, tuple(nets), used_by)
    return labs


# Checked on import: a table with an overlap cannot be used at all.
LABS = check(TABLE)


def subnets(prefix: str) -> LabSubnets:
    """The ranges of lab `prefix`; SubnetError when it is not in the table (add it there)."""
    try:
        return LABS[prefix]
    except KeyError:
        raise SubnetError(f"lab {prefix!r} is not in lab/subnets.py's TABLE: give it a prefix and free ranges there") from None

