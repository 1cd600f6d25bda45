"""The public zone: generated from the catalog, checked by BIND's own tools, mail records by checkdmarc, and the serial rule."""

from __future__ import annotations

import base64
import copy
import os
import shutil
import socket
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import checkdmarc.spf
import checkdmarc.utils
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.zone
import pytest
from checkdmarc.dmarc import parse_dmarc_record
from checkdmarc.spf import parse_spf_record
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from render.roles import dns as rdns
from model.check_dns import build_dns
from model.dns import Dns
from model.errors import ConfigError
from model.load import load_stack

pytestmark = pytest.mark.files

NAMED_CHECKZONE = shutil.which("named-checkzone")
NAMED_CHECKCONF = shutil.which("named-checkconf")
SHELLCHECK = shutil.which("shellcheck")

DAY1 = date(2026, 1, 15)
DAY2 = date(2026, 1, 16)
DAY3 = date(2026, 2, 1)
SERIAL = 2026011500

# Outside names the sample config points at, as a fake resolver answers them.
OUTSIDE = {
    ("_spf.newsletter.example", "TXT"): ['"v=spf1 ip4:198.51.100.0/24 -all"'],
    ("mx2.backup-mx.example", "A"): ["192.0.2.25"],
}


def _tool(path, package):
    if path is None:
        pytest.fail(f"{package} is not installed; run `make setup` (Debian package {package})")
    return path


def _der_b64(public_key) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def dkim_key() -> str:
    return _der_b64(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())


@pytest.fixture(scope="module")
def prod():
    return load_stack("prod")


@pytest.fixture(scope="module")
def staging():
    return load_stack("staging")


def sample(dkim_key: str) -> dict[str, Any]:
    """A full dns section for prod, as it would come from Pulumi.prod.yaml."""
    return {
        "nameservers": [{"name": "ns1.hypha.coop"}, {"name": "ns2.secondary.example"}],
        "secondaries": ["192.0.2.53", "2001:db8:53::53"],
        "mx": [{"host": "lists", "priority": 10}, {"host": "mx2.backup-mx.example", "priority": 20}],
        "spf": {"include": ["_spf.newsletter.example"], "qualifier": "-all"},
        "dkim": [{"selector": "mail2026", "public_key": dkim_key}],
        "dmarc": {"policy": "quarantine", "rua": ["dmarc-reports@hypha.coop"], "adkim": "s", "aspf": "r"},
        "caa_issuers": ["letsencrypt.org"],
        "caa_iodef": "mailto:hostmaster@hypha.coop",
        "extra_records": [
            {"name": "status", "type": "CNAME", "value": "hypha.statuspage.example"},
            {"name": "@", "type": "TXT", "value": "google-site-verification=0123456789abcdef", "ttl": 300},
        ],
    }


@pytest.fixture(scope="module")
def prod_dns(prod, dkim_key) -> Dns:
    return build_dns(sample(dkim_key), prod)


@pytest.fixture(scope="module")
def records(prod, prod_dns) -> list[rdns.Record]:
    return rdns.zone_records(prod, prod_dns)


def at(records, name: str, rtype: str) -> list[str]:
    return sorted(r.data for r in records if r.name == name and r.type == rtype)


def checkzone(zone: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool(NAMED_CHECKZONE, "bind9-utils"), *rdns.CHECKZONE_ARGS, zone, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def txt_strings(zone_text: str, origin: str, name: str) -> list[list[bytes]]:
    """The TXT records at `name` as the wire has them: each a list of character-strings."""
    zone = dns.zone.from_text(zone_text, origin=origin, relativize=False)
    rdataset = zone.find_rdataset(dns.name.from_text(name, origin=dns.name.root), "TXT")
    return [list(rdata.strings) for rdata in rdataset]


# --- the zone file, by BIND's own checker -------------------------------------------------------


def test_prod_zone_passes_named_checkzone(tmp_path, records):
    path = tmp_path / "hypha.coop.zone"
    path.write_text(rdns.render_zone(records, SERIAL))
    result = checkzone("hypha.coop", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"loaded serial {SERIAL}" in result.stdout


def test_managed_zone_body_passes_named_checkzone_as_is(tmp_path, prod, prod_dns):
    """The converge checks the staged body directly: serial 0 is a valid serial. The staged body has
    its late values filled (the mail host's DKIM key: quoted base64 strings)."""
    from render.plan import LATE_MARK

    path = tmp_path / "body"
    path.write_text(LATE_MARK.sub('"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"', rdns.zone_body(prod, prod_dns)))
    result = checkzone("hypha.coop", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_staging_zone_passes_named_checkzone_and_points_at_lan_addresses(tmp_path, staging):
    """Staging has no public network: its zone is served to the VPN and gives LAN addresses."""
    dns_ = build_dns({"dmarc": {"policy": "reject"}}, staging)
    recs = rdns.zone_records(staging, dns_)
    path = tmp_path / "staging.zone"
    path.write_text(rdns.render_zone(recs, SERIAL))
    result = checkzone("staging.hypha.coop", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert at(recs, "link.staging.hypha.coop", "A") == ["10.0.2.11"]
    assert at(recs, "ns1.staging.hypha.coop", "A") == ["10.0.2.16"]
    assert not [r for r in recs if r.type == "AAAA"]


def test_named_checkzone_rejects_a_zone_missing_its_name_server_glue(tmp_path, records):
    """The check above can fail: without ns1's addresses BIND refuses the zone."""
    path = tmp_path / "broken.zone"
    path.write_text(rdns.render_zone([r for r in records if r.name != "ns1.hypha.coop"], SERIAL))
    result = checkzone("hypha.coop", path)
    assert result.returncode != 0
    assert "ns1.hypha.coop" in result.stdout + result.stderr


def test_rendering_is_deterministic(prod, dkim_key):
    first = rdns.zone_body(prod, build_dns(sample(dkim_key), prod))
    reordered = sample(dkim_key)
    reordered["extra_records"].reverse()
    reordered["caa_issuers"] = ["letsencrypt.org"]
    assert rdns.zone_body(prod, build_dns(reordered, prod)) == first


# --- what the catalog puts in the zone ----------------------------------------------------------


def test_every_public_service_domain_points_at_the_reverse_proxy(prod, records):
    web1 = prod.hosts["web1"]
    for name, svc in prod.services.items():
        for domain in svc.domains:
            if svc.public:
                assert at(records, domain, "A") == [str(web1.public_ipv4)], domain
                assert at(records, domain, "AAAA") == [str(web1.public_ipv6)], domain
            else:
                assert not [r for r in records if r.name == domain], f"{name} is not public but {domain} is in the zone"


def test_apex_service_domain_gets_apex_addresses_and_www_is_an_address_record_not_a_cname(records):
    assert at(records, "hypha.coop", "A") == ["203.0.113.11"]
    assert at(records, "www.hypha.coop", "A") == ["203.0.113.11"]
    assert at(records, "www.hypha.coop", "CNAME") == []


def test_zone_has_soa_and_ns_with_glue_from_the_dns_host(records):
    soa = at(records, "hypha.coop", "SOA")
    assert len(soa) == 1 and soa[0].startswith("ns1.hypha.coop. hostmaster.hypha.coop. 0 ")
    assert at(records, "hypha.coop", "NS") == ["ns1.hypha.coop.", "ns2.secondary.example."]
    assert at(records, "ns1.hypha.coop", "A") == ["203.0.113.16"]
    assert at(records, "ns1.hypha.coop", "AAAA") == ["2001:db8:1::16"]
    assert not [r for r in records if r.name.endswith("secondary.example")]


def test_mx_points_at_the_catalog_mail_host_and_the_outside_backup(records):
    assert at(records, "hypha.coop", "MX") == ["10 mail.hypha.coop.", "20 mx2.backup-mx.example."]
    assert at(records, "mail.hypha.coop", "A") == ["203.0.113.14"]
    assert at(records, "mail.hypha.coop", "AAAA") == ["2001:db8:1::14"]


def test_spf_dkim_dmarc_and_caa_are_in_the_zone(records, dkim_key):
    zone_text = rdns.render_zone(records, SERIAL)
    apex = [b"".join(s).decode() for s in txt_strings(zone_text, "hypha.coop", "hypha.coop")]
    assert "v=spf1 mx include:_spf.newsletter.example -all" in apex
    (dkim,) = txt_strings(zone_text, "hypha.coop", "mail2026._domainkey.hypha.coop")
    assert b"".join(dkim).decode() == f"v=DKIM1; k=rsa; p={dkim_key}"
    (dmarc,) = txt_strings(zone_text, "hypha.coop", "_dmarc.hypha.coop")
    assert b"".join(dmarc).decode() == "v=DMARC1; p=quarantine; adkim=s; aspf=r; rua=mailto:dmarc-reports@hypha.coop"
    assert at(records, "hypha.coop", "CAA") == ['0 iodef "mailto:hostmaster@hypha.coop"', '0 issue "letsencrypt.org"']


def test_long_dkim_keys_are_split_into_strings_of_at_most_255_bytes(records):
    """A 2048-bit key is about 400 characters: one TXT record of several strings, joined by receivers."""
    zone_text = rdns.render_zone(records, SERIAL)
    (strings,) = txt_strings(zone_text, "hypha.coop", "mail2026._domainkey.hypha.coop")
    assert len(strings) == 2
    assert [len(s) for s in strings] == [255, len(b"".join(strings)) - 255]


def test_txt_values_with_quotes_and_backslashes_survive_the_zone_file():
    text = 'a"b\\c' + "x" * 300
    zone_text = rdns.render_zone(
        [
            rdns.Record("example.org", "SOA", "ns1.example.org. h.example.org. 0 1 1 1 1", 60),
            rdns.Record("example.org", "NS", "ns1.example.org.", 60),
            rdns.Record("ns1.example.org", "A", "192.0.2.1", 60),
            rdns.Record("t.example.org", "TXT", rdns.txt_data(text), 60),
        ],
        1,
    )
    (strings,) = txt_strings(zone_text, "example.org", "t.example.org")
    assert b"".join(strings).decode() == text
    assert max(len(s) for s in strings) == 255


def test_ed25519_dkim_keys_are_published_with_their_key_type(prod):
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key = base64.b64encode(raw).decode()
    dns_ = build_dns({"dkim": [{"selector": "ed", "public_key": key, "key_type": "ed25519"}]}, prod)
    (data,) = at(rdns.zone_records(prod, dns_), "ed._domainkey.hypha.coop", "TXT")
    assert data == f'"v=DKIM1; k=ed25519; p={key}"'


def test_without_mail_servers_the_zone_says_it_receives_and_sends_no_mail(prod):
    recs = rdns.zone_records(prod, build_dns({}, prod))
    assert at(recs, "hypha.coop", "MX") == ["0 ."]
    assert '"v=spf1 -all"' in at(recs, "hypha.coop", "TXT")


def test_extra_records_are_published_with_their_own_ttl(records):
    assert at(records, "status.hypha.coop", "CNAME") == ["hypha.statuspage.example."]
    verification = [r for r in records if r.data == '"google-site-verification=0123456789abcdef"']
    assert [r.ttl for r in verification] == [300]
    assert " 300 IN TXT" in rdns.render_zone(records, SERIAL)


def test_public_service_domains_outside_the_zone_are_skipped_and_listed(prod, prod_dns):
    raw = prod.model_dump()
    raw["services"]["shop"] = {"host": "bw1", "domains": ["shop.example.org", "shop.hypha.coop"], "port": 8090, "public": True}
    stack = type(prod).model_validate(raw)
    recs = rdns.zone_records(stack, prod_dns)
    assert at(recs, "shop.hypha.coop", "A") == ["203.0.113.11"]
    assert not [r for r in recs if "example.org" in r.name]
    assert rdns.out_of_zone_domains(stack) == ["shop.example.org"]
    assert rdns.out_of_zone_domains(prod) == []


# --- the mail records, by checkdmarc's parsers (no real DNS) ------------------------------------


class ZoneResolver:
    """Answers checkdmarc's queries from the rendered zone and the OUTSIDE table; never the network."""

    lifetime = 1.0

    def __init__(self, zone_text: str, origin: str):
        self.origin = dns.name.from_text(origin)
        self.zone = dns.zone.from_text(zone_text, origin=origin, relativize=False)
        self.asked: list[tuple[str, str]] = []

    def resolve(self, qname, rdtype, *args, **kwargs):
        name = dns.name.from_text(str(qname))
        rdtype = dns.rdatatype.to_text(dns.rdatatype.from_text(str(rdtype)) if isinstance(rdtype, str) else rdtype)
        self.asked.append((name.to_text(omit_final_dot=True), rdtype))
        if name.is_subdomain(self.origin):
            node = self.zone.get_node(name)
            if node is None:
                raise dns.resolver.NXDOMAIN(qnames=[name])
            rdataset = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
            if rdataset is None:
                raise dns.resolver.NoAnswer()
            return list(rdataset)
        key = (name.to_text(omit_final_dot=True), rdtype)
        if key not in OUTSIDE:
            if any(known == key[0] for known, _ in OUTSIDE):
                raise dns.resolver.NoAnswer()
            raise dns.resolver.NXDOMAIN(qnames=[name])
        return [dns.rdata.from_text("IN", rdtype, text) for text in OUTSIDE[key]]


@pytest.fixture
def offline(monkeypatch):
    """checkdmarc gets our resolver; any attempt at a real query or connection fails the test."""
    checkdmarc.utils.DNS_CACHE.clear()

    def refuse(*args, **kwargs):
        raise AssertionError("checkdmarc tried to reach the network")

    monkeypatch.setattr(dns.resolver.Resolver, "resolve", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "sendto", refuse)
    yield
    checkdmarc.utils.DNS_CACHE.clear()


def test_spf_record_parses_with_checkdmarc(offline, records):
    zone_text = rdns.render_zone(records, SERIAL)
    resolver = ZoneResolver(zone_text, "hypha.coop")
    spf = next(r for r in at(records, "hypha.coop", "TXT") if "v=spf1" in r)
    result = parse_spf_record(spf, "hypha.coop", resolver=resolver)
    assert result["parsed"]["all"] == "fail"
    mechanisms = [(m["mechanism"], m["value"]) for m in result["parsed"]["mechanisms"]]
    assert mechanisms == [("mx", "hypha.coop"), ("include", "_spf.newsletter.example")]
    assert result["warnings"] == []
    assert result["dns_lookups"] <= 10
    assert ("hypha.coop", "MX") in resolver.asked  # the `mx` mechanism was resolved from our zone


def test_dmarc_record_parses_with_checkdmarc(offline, records):
    zone_text = rdns.render_zone(records, SERIAL)
    resolver = ZoneResolver(zone_text, "hypha.coop")
    (dmarc,) = at(records, "_dmarc.hypha.coop", "TXT")
    result = parse_dmarc_record(dmarc, "hypha.coop", resolver=resolver)
    tags = result["tags"]
    assert tags["p"]["value"] == "quarantine"
    assert tags["adkim"]["value"] == "s"
    assert tags["rua"]["value"][0]["address"] == "dmarc-reports@hypha.coop"
    assert result["warnings"] == []
    assert ("hypha.coop", "MX") in resolver.asked  # the report address's domain takes mail


def test_checkdmarc_rejects_a_broken_spf_record(offline, records):
    """The parse above can fail: a qualifier glued to the previous term is a syntax error."""
    resolver = ZoneResolver(rdns.render_zone(records, SERIAL), "hypha.coop")
    with pytest.raises(checkdmarc.spf.SPFSyntaxError):
        parse_spf_record('"v=spf1 mx-all"', "hypha.coop", resolver=resolver)


# --- the serial rule ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bodies(prod, dkim_key) -> list[str]:
    """Three different managed bodies of the prod zone."""
    raw = sample(dkim_key)
    a = rdns.zone_body(prod, build_dns(raw, prod))
    raw_b = copy.deepcopy(raw)
    raw_b["extra_records"].append({"name": "_github-challenge-hypha", "type": "TXT", "value": "abc123"})
    b = rdns.zone_body(prod, build_dns(raw_b, prod))
    raw_c = copy.deepcopy(raw_b)
    raw_c["ttl"] = 1800
    c = rdns.zone_body(prod, build_dns(raw_c, prod))
    assert len({a, b, c}) == 3
    return [a, b, c]


def live_after(live: str | None, body: str, today: date) -> str:
    """What the host holds after a converge, by the Python rule."""
    serial = rdns.next_serial(
        rdns.serial_of(live) if live else None, rdns.body_sha256(live) if live else None, body, today
    )
    return rdns.set_serial(body, serial)


def test_first_serial_is_today_with_nn_00(bodies):
    assert rdns.next_serial(None, None, bodies[0], DAY1) == 2026011500


def test_unchanged_body_keeps_its_serial(bodies):
    live = rdns.set_serial(bodies[0], 2026011503)
    assert rdns.next_serial(2026011503, rdns.body_sha256(live), bodies[0], DAY2) == 2026011503
    assert live_after(live, bodies[0], DAY3) == live


def test_changed_body_increases_the_serial(bodies):
    live = rdns.set_serial(bodies[0], 2026011503)
    assert rdns.next_serial(2026011503, rdns.body_sha256(live), bodies[1], DAY2) == 2026011600


def test_same_day_changes_increment_nn(bodies):
    live = live_after(None, bodies[0], DAY1)
    live = live_after(live, bodies[1], DAY1)
    live = live_after(live, bodies[2], DAY1)
    assert rdns.serial_of(live) == 2026011502


def test_serial_never_goes_backwards(bodies):
    # A live serial ahead of today (a clock that was wrong, or nn past 99) keeps counting up.
    assert rdns.next_serial(2030010105, "old", bodies[0], DAY1) == 2030010106
    assert rdns.next_serial(2026011599, "old", bodies[0], DAY1) == 2026011600
    assert rdns.next_serial(2026011600, "old", bodies[1], DAY1) == 2026011601


def test_body_hash_ignores_only_the_serial(bodies):
    assert rdns.body_sha256(rdns.set_serial(bodies[0], 2026011507)) == rdns.body_sha256(bodies[0])
    assert rdns.body_sha256(bodies[1]) != rdns.body_sha256(bodies[0])


# --- the same rule on the host: zone-serial.sh ---------------------------------------------------


def run_serial_script(tmp_path: Path, body: str, today: date) -> tuple[str, str]:
    script = tmp_path / "zone-serial.sh"
    if not script.exists():
        script.write_text(rdns.serial_script())
    (tmp_path / "body").write_text(body)
    result = subprocess.run(
        ["sh", str(script), str(tmp_path / "body"), str(tmp_path / "live"), today.strftime("%Y%m%d")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip(), (tmp_path / "live").read_text()


def test_serial_script_follows_the_python_rule_step_by_step(tmp_path, bodies):
    a, b, c = bodies
    steps = [
        (a, DAY1, "changed 2026011500"),
        (a, DAY1, "unchanged 2026011500"),
        (b, DAY1, "changed 2026011501"),
        (c, DAY1, "changed 2026011502"),
        (c, DAY2, "unchanged 2026011502"),
        (a, DAY2, "changed 2026011600"),
        (a, DAY3, "unchanged 2026011600"),
        (b, DAY3, "changed 2026020100"),
    ]
    python_live = None
    for body, today, expected in steps:
        said, live = run_serial_script(tmp_path, body, today)
        python_live = live_after(python_live, body, today)
        assert said == expected
        assert live == python_live, f"sh and Python disagree after {expected}"


def test_serial_script_leaves_an_unchanged_zone_untouched(tmp_path, bodies):
    run_serial_script(tmp_path, bodies[0], DAY1)
    before = os.stat(tmp_path / "live").st_mtime_ns
    said, _ = run_serial_script(tmp_path, bodies[0], DAY2)
    assert said == "unchanged 2026011500"
    assert os.stat(tmp_path / "live").st_mtime_ns == before


def test_serial_script_never_goes_backwards(tmp_path, bodies):
    (tmp_path / "live").write_text(rdns.set_serial(bodies[0], 2030010105))
    said, live = run_serial_script(tmp_path, bodies[1], DAY1)
    assert said == "changed 2030010106"
    assert live == rdns.set_serial(bodies[1], 2030010106)


def test_serial_script_replaces_a_hand_edited_live_zone_with_a_new_serial(tmp_path, bodies):
    run_serial_script(tmp_path, bodies[0], DAY1)
    live = tmp_path / "live"
    live.write_text(live.read_text().replace("203.0.113.11", "203.0.113.99"))
    said, text = run_serial_script(tmp_path, bodies[0], DAY1)
    assert said == "changed 2026011501"
    assert text == rdns.set_serial(bodies[0], 2026011501)


def test_serial_script_records_the_body_hash_next_to_the_live_zone(tmp_path, bodies):
    run_serial_script(tmp_path, bodies[0], DAY1)
    assert (tmp_path / "live.body-sha256").read_text() == rdns.body_sha256(bodies[0]) + "\n"
    run_serial_script(tmp_path, bodies[1], DAY1)
    assert (tmp_path / "live.body-sha256").read_text() == rdns.body_sha256(bodies[1]) + "\n"


def test_serial_script_refuses_a_body_without_exactly_one_serial_line(tmp_path, bodies):
    script = tmp_path / "zone-serial.sh"
    script.write_text(rdns.serial_script())
    (tmp_path / "body").write_text(bodies[0].replace("; serial", "; serial?"))
    result = subprocess.run(
        ["sh", str(script), str(tmp_path / "body"), str(tmp_path / "live"), "20260115"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "0 serial lines" in result.stderr
    assert not (tmp_path / "live").exists()


def test_serial_script_passes_shellcheck(tmp_path):
    script = tmp_path / "zone-serial.sh"
    script.write_text(rdns.serial_script())
    result = subprocess.run([_tool(SHELLCHECK, "shellcheck"), "-s", "sh", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the BIND config -----------------------------------------------------------------------------


def test_secondaries_may_transfer_the_zone_and_are_notified(prod, prod_dns):
    conf = rdns.named_conf_local(prod, prod_dns)
    assert "allow-transfer { 192.0.2.53; 2001:db8:53::53; };" in conf
    assert "also-notify { 192.0.2.53; 2001:db8:53::53; };" in conf
    assert "notify explicit;" in conf
    assert 'file "/var/lib/bind/hypha.coop.zone";' in conf


def test_without_secondaries_nobody_may_transfer_the_zone(prod):
    conf = rdns.named_conf_local(prod, build_dns({}, prod))
    assert "allow-transfer { none; };" in conf
    assert "also-notify" not in conf


def test_options_make_an_authoritative_only_server_that_hides_its_version():
    options = rdns.named_conf_options()
    for line in ("recursion no;", "allow-recursion { none; };", "version none;", "minimal-responses yes;", "allow-transfer { none; };"):
        assert line in options


def named_checkconf(tmp_path: Path, local: str, zone_text: str) -> subprocess.CompletedProcess:
    """A minimal named.conf that includes the rendered fragments, as Debian's does; -z loads the zone too."""
    (tmp_path / "named.conf.options").write_text(rdns.named_conf_options())
    (tmp_path / "named.conf.local").write_text(local)
    (tmp_path / "hypha.coop.zone").write_text(zone_text)
    main = tmp_path / "named.conf"
    main.write_text(f'include "{tmp_path}/named.conf.options";\ninclude "{tmp_path}/named.conf.local";\n')
    return subprocess.run(
        [_tool(NAMED_CHECKCONF, "bind9-utils"), "-z", str(main)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("secondaries", [True, False], ids=["with-secondaries", "without-secondaries"])
def test_named_checkconf_accepts_the_rendered_config(tmp_path, prod, prod_dns, records, secondaries):
    dns_ = prod_dns if secondaries else build_dns({}, prod)
    local = rdns.named_conf_local(prod, dns_, zone_file=str(tmp_path / "hypha.coop.zone"))
    result = named_checkconf(tmp_path, local, rdns.render_zone(records, SERIAL))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"loaded serial {SERIAL}" in result.stdout


def test_named_checkconf_rejects_a_secondary_given_by_name(tmp_path, prod, prod_dns, records):
    """Why secondaries must be addresses: BIND refuses a name in allow-transfer."""
    local = rdns.named_conf_local(prod, prod_dns, zone_file=str(tmp_path / "hypha.coop.zone"))
    local = local.replace("192.0.2.53;", "ns2.secondary.example;")
    result = named_checkconf(tmp_path, local, rdns.render_zone(records, SERIAL))
    assert result.returncode != 0


def test_dns_role_files_are_the_options_the_zone_stanza_the_body_and_the_serial_script(prod, prod_dns):
    files = {f.path: f for f in rdns.dns_files(prod, prod_dns)}
    assert set(files) == {
        "/etc/bind/named.conf.options",
        "/etc/bind/named.conf.local",
        "/etc/bind/hypha/hypha.coop.zone",
        "/usr/local/lib/hypha-infra/zone-serial.sh",
    }
    assert rdns.serial_of(files["/etc/bind/hypha/hypha.coop.zone"].content) == rdns.BODY_SERIAL
    assert files["/usr/local/lib/hypha-infra/zone-serial.sh"].mode == "0755"


# --- bad dns config: refused with its key path and the fix ---------------------------------------


def _set(raw: dict, path: str, value: Any) -> dict:
    node = raw
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return raw


BAD = [
    ("mx.0.priority", 70000, "dns.mx[0].priority", ("0 to 65535",)),
    ("mx.0.priority", -1, "dns.mx[0].priority", ("0 to 65535",)),
    ("dkim.0.public_key", "not base64!", "dns.dkim[0].public_key", ("not base64", "p= value")),
    ("dkim.0.public_key", "aGVsbG8gd29ybGQ=", "dns.dkim[0].public_key", ("not an RSA public key",)),
    ("dmarc.policy", "block", "dns.dmarc.policy", ("'none', 'quarantine' or 'reject'",)),
    ("dmarc.rua", ["mailto:dmarc@hypha.coop"], "dns.dmarc.rua[0]", ("write the address alone",)),
    ("mx.0.host", "mail server", "dns.mx[0].host", ("neither a catalog host name", "fully qualified domain name")),
    ("mx.0.host", "mailhost", "dns.mx[0].host", ("unknown host 'mailhost'", "known hosts")),
    ("mx.0.host", "bw1", "dns.mx[0].host", ("no public address",)),
    ("mx.0.host", "smtp.hypha.coop", "dns.mx[0].host", ("inside the zone", "catalog host")),
    ("mx.0.name", "lists.hypha.coop", "dns.mx[0].name", ("already gets other addresses", "services.lists")),
    ("secondaries", ["192.0.2.53", "ns2.secondary.example"], "dns.secondaries[1]", ("not an IP address", "by address")),
    ("spf.include", ["include:_spf.google.com"], "dns.spf.include[0]", ("without `include:`",)),
    ("spf.include", [f"s{i}.example.org" for i in range(10)], "dns.spf.include", ("11 DNS lookups", "allows 10")),
    ("spf.qualifier", "+all", "dns.spf.qualifier", ("'-all' or '~all'",)),
    ("caa_issuers", [], "dns.caa_issuers", ("at least one",)),
    ("nameservers.0.host", "nohost", "dns.nameservers[0].host", ("unknown host 'nohost'",)),
    ("extra_records.0", {"name": "www", "type": "CNAME", "value": "x.example.org"}, "dns.extra_records[0].name", ("only record",)),
    ("extra_records.1", {"name": "@", "type": "TXT", "value": "v=spf1 -all"}, "dns.extra_records[1].value", ("dns.spf",)),
    ("extra_records.1", {"name": "x.hypha.coop", "type": "TXT", "value": "y"}, "dns.extra_records[1].name", ("relative", "'x'")),
    ("extra_records.0", {"name": "@", "type": "CNAME", "value": "x.example.org"}, "dns.extra_records[0].name", ("apex",)),
    ("mx_hosts", [], "dns.mx_hosts", ("not a known key",)),
]


@pytest.mark.parametrize("path,value,where,words", BAD, ids=[f"{p}={v!r}"[:60] for p, v, _, _ in BAD])
def test_bad_dns_config_is_refused_with_its_key_path_and_fix(prod, dkim_key, path, value, where, words):
    raw = _set(sample(dkim_key), path, value)
    with pytest.raises(ConfigError) as caught:
        build_dns(raw, prod)
    messages = [p.message for p in caught.value.problems if p.path == where]
    assert messages, f"no problem at {where}; got:\n{caught.value}"
    assert any(all(w in m for w in words) for m in messages), f"{where}: expected {words} in {messages}"


def test_a_stack_without_a_dns_host_is_told_to_give_one_the_role(prod):
    raw = prod.model_dump()
    raw["hosts"]["dns"]["roles"] = []
    with pytest.raises(ConfigError) as caught:
        build_dns({}, type(prod).model_validate(raw))
    assert [p.message for p in caught.value.problems if p.path == "dns"] == [
        "no host has the `dns` role to serve the zone; add `dns` to the roles of the host that runs BIND"
    ]


def test_a_valid_dns_config_has_no_problems(prod, staging, dkim_key):
    build_dns(sample(dkim_key), prod)
    build_dns({}, prod)
    build_dns({}, staging)
