"""Every lab has its own prefix and ranges, from one table (lab/subnets.py), so labs run side by side on one machine."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from lab import subnets as sn

pytestmark = pytest.mark.program

ROOT = Path(__file__).resolve().parent.parent
# Where labs are built: every test module, bench and lab module (not the table, nor this file, which
# makes up labs to show the table refusing them).
SOURCES = sorted(p for p in [*ROOT.glob("tests/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("lab/*.py"), *ROOT.glob("ops/*.py")]
                 if p not in (ROOT / "lab/subnets.py", Path(__file__).resolve()))


def test_no_two_labs_share_a_range():
    owner = {}
    for lab in sn.LABS.values():
        for net in lab.nets:
            assert net not in owner, f"{net}: {owner.get(net)} and {lab.prefix}"
            owner[net] = lab.prefix
            assert net.subnet_of(sn.SPACE) and net.prefixlen == 24


def test_a_table_with_an_overlap_is_refused():
    with pytest.raises(sn.SubnetError, match=r"lab b: 10\.213\.7\.0/24 is already lab a's"):
        sn.check({"a": ((6, 7), "one"), "b": ((8, 7, 9), "another")})


@pytest.mark.parametrize("table, message", [
    ({"Bad-1": ((6, 7), "x")}, "lab prefix 'Bad-1' must match"),
    ({"a": ((6,), "x")}, "needs at least a front and a LAN range"),
    ({"a": ((6, 256), "x")}, "256 is not a third octet"),
])
def test_a_malformed_table_is_refused(table, message):
    with pytest.raises(sn.SubnetError, match=re.escape(message)):
        sn.check(table)


def test_a_lab_not_in_the_table_gets_no_ranges():
    with pytest.raises(sn.SubnetError, match="'nolab' is not in lab/subnets.py's TABLE"):
        sn.subnets("nolab")
    with pytest.raises(sn.SubnetError, match="tlab has no VPN range"):
        _ = sn.subnets("tlab").vpn


def test_ranges_are_front_lan_vpn_then_spare():
    mail = sn.subnets("tmail")
    assert (str(mail.front), str(mail.lan), str(mail.vpn)) == ("10.213.150.0/24", "10.213.151.0/24", "10.213.152.0/24")
    assert [str(n) for n in mail.spare] == ["10.213.153.0/24", "10.213.154.0/24"]


def test_the_labs_being_written_now_are_reserved():
    expected = {"tmail": range(150, 155), "tinv": range(160, 165), "tret": range(170, 175)}
    for prefix, octets in expected.items():
        assert [n.network_address.packed[2] for n in sn.subnets(prefix).nets] == list(octets)


def test_no_lab_range_is_written_outside_the_table():
    """A range literal (10.213.x.0/24) anywhere else would be a lab the table does not know."""
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in SOURCES
             for m in re.finditer(r"10\.213\.\d+\.0/\d+", p.read_text())]
    assert found == []


def test_every_lab_prefix_in_the_code_is_in_the_table():
    """Prefixes written as literals (Lab("x", …), Layout("x", …), PREFIX = "x", subnets("x")) all have ranges here."""
    pattern = re.compile(r'(?:\bLab|\bLayout|\bsubnets|converged_lab)\(\s*"([a-z][a-z0-9]*)"|\b(?:PREFIX|prefix) = "([a-z][a-z0-9]*)"')
    used = {a or b for p in SOURCES for a, b in pattern.findall(p.read_text())}
    assert used, "the pattern finds the labs"
    assert used - set(sn.LABS) == set(), "labs with hand-picked prefixes: add them to lab/subnets.py"
    # And the other way: every lab of the table except the reserved ones is used somewhere.
    assert set(sn.LABS) - used - {"tmail", "tinv", "tret"} == set()


def test_lab_ranges_are_never_committed_addresses():
    committed = [ipaddress.ip_network(n) for n in ("10.0.0.0/16", "203.0.113.0/24")]
    assert not any(net.overlaps(c) for lab in sn.LABS.values() for net in lab.nets for c in committed)
