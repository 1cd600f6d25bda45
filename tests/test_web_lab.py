"""Host tier, the web edge end to end: a reverse proxy, a name server and an upstream, converged as prod,
with certificates from a private ACME CA (pebble) that validates through the lab's own DNS."""

from __future__ import annotations

import copy
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from lab.hosts import Lab, stop_process
from lab.stack import (
    DKIM_SELECTOR,
    PEBBLE_MANAGEMENT_PORT,
    PEBBLE_PORT,
    WEB_FRONT,
    WEB_LAN,
    WebLabStack,
    boot_and_converge,
    web_lab_stack,
)
from ops.remote import Result, converge
from render.roles import dns as zone
from render import shortlinks
from render.roles.reverse_proxy import TLS_DIR, certificates
from model.load import build_stack
from model.stack import Stack
from tests.tools import lab_ready

pytestmark = pytest.mark.lab

PREFIX = "hweb"
DOMAIN = "hypha.coop"
# The stand-in for each upstream service: the app itself is out of scope, this answers for it.
UPSTREAMS = {"www": 8080, "loomio": 3000}
UPSTREAM_SCRIPT = "/srv/fake-upstream.py"
UPSTREAM_CODE = r'''
import http.server, json, sys

port, marker = int(sys.argv[1]), sys.argv[2]


class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"marker": marker, "path": self.path, "peer": self.client_address[0],
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.ThreadingHTTPServer(("0.0.0.0", port), Echo).serve_forever()
'''
CLIENT_XFF = "203.0.113.99"  # what a client claims to be; the upstream must never believe it
# Debian packages this module runs, here or in the hosts (a lab host's / is this machine's).
TOOLS = {"pebble": "pebble", "testssl": "testssl.sh", "dig": "dnsutils", "certbot": "certbot",
         "named": "bind9", "nginx": "nginx", "openssl": "openssl"}


@dataclass
class Web:
    lab: Lab
    ls: WebLabStack
    first: dict[str, Result]
    pebble_root: str
    tmp: Path

    @property
    def stack(self) -> Stack:
        return self.ls.stack

    @property
    def proxy(self) -> str:
        return str(self.stack.hosts["web1"].public_ipv4)

    @property
    def ns(self) -> str:
        return str(self.stack.hosts["dns"].public_ipv4)

    def converge(self, host: str, stack: Optional[Stack] = None) -> Result:
        return converge(stack or self.stack, host, self.ls.keys["deploy"].private_openssh)


def _wait_port(address: str, port: int, seconds: float, proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode} before listening on {address}:{port}")
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {address}:{port} after {seconds} s")


def _start_pebble(ls: WebLabStack, tmp: Path, dns: bool = True) -> tuple[subprocess.Popen, Path]:
    """pebble in the root namespace ("the internet"), its names resolved by the lab's dns host; a lab
    without one (dns=False) has pebble take every challenge as valid."""
    (tmp / "pebble-cert.pem").write_text(ls.pebble_cert_pem)
    (tmp / "pebble-key.pem").write_text(ls.pebble_key_pem)
    config = tmp / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"{ls.pebble_address}:{PEBBLE_PORT}",
        "managementListenAddress": f"{ls.pebble_address}:{PEBBLE_MANAGEMENT_PORT}",
        "certificate": str(tmp / "pebble-cert.pem"),
        "privateKey": str(tmp / "pebble-key.pem"),
        "httpPort": 80,
        "tlsPort": 443,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}))
    log = tmp / "pebble.log"
    argv = ["pebble", "-config", str(config)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    if dns:
        argv += ["-dnsserver", f"{ls.front_ip['dns']}:53"]
    else:
        env["PEBBLE_VA_ALWAYS_VALID"] = "1"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
    try:
        _wait_port(ls.pebble_address, PEBBLE_PORT, 15, proc)
        _wait_port(ls.pebble_address, PEBBLE_MANAGEMENT_PORT, 15, proc)
    except RuntimeError as exc:
        stop_process(proc)
        raise RuntimeError(f"pebble: {exc}\n{log.read_text(errors='replace')[-2000:]}") from None
    return proc, log


def _start_upstreams(lab: Lab) -> None:
    root = lab.root_dir("app")
    (root / UPSTREAM_SCRIPT.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (root / UPSTREAM_SCRIPT.lstrip("/")).write_text(UPSTREAM_CODE)
    for name, port in UPSTREAMS.items():
        lab.run("app", ["systemd-run", f"--unit=fake-{name}", "python3", UPSTREAM_SCRIPT, str(port), name])


def _pebble_root(ls: WebLabStack) -> str:
    ctx = ssl.create_default_context(cadata=ls.acme_ca_pem)
    conn = http.client.HTTPSConnection(ls.pebble_address, PEBBLE_MANAGEMENT_PORT, context=ctx, timeout=10)
    try:
        conn.request("GET", "/roots/0")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200, body
        return body
    finally:
        conn.close()


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    lab_ready(TOOLS, "web")
    ls = web_lab_stack(WEB_FRONT, WEB_LAN)
    tmp = tmp_path_factory.mktemp("web")
    with Lab(PREFIX, ls.lab_hosts, front=str(WEB_FRONT), lan=str(WEB_LAN), lan_gateway=ls.lan_gateway) as lab:
        pebble, log = _start_pebble(ls, tmp)
        try:
            _start_upstreams(lab)
            first = boot_and_converge(lab, ls)
            yield Web(lab, ls, first, _pebble_root(ls), tmp)
        finally:
            stop_process(pebble)
            try:
                lab.run("app", ["systemctl", "stop", *(f"fake-{n}" for n in UPSTREAMS)], check=False)
            except Exception:  # noqa: BLE001 - the host is gone anyway when the lab goes down
                pass
            # For a failure's post-mortem: what pebble saw.
            print(f"pebble log: {log}")


# --- helpers -----------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def _tls_context(web: Web) -> ssl.SSLContext:
    """A client trusting only pebble's root: a certificate from anywhere else fails the handshake."""
    ctx = ssl.create_default_context(cadata=web.pebble_root)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _https(web: Web, name: str, path: str = "/", headers: Optional[dict] = None) -> Response:
    """GET https://<name><path> from the root namespace, sent to the proxy's address with SNI <name>."""
    raw = socket.create_connection((web.proxy, 443), timeout=10)
    try:
        tls = _tls_context(web).wrap_socket(raw, server_hostname=name)
    except BaseException:
        raw.close()
        raise
    conn = http.client.HTTPConnection(name, 443, timeout=10)
    conn.sock = tls
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def _http(web: Web, name: str, path: str = "/") -> Response:
    conn = http.client.HTTPConnection(web.proxy, 80, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": name})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def _served_cert(web: Web, name: str) -> dict:
    """The certificate the proxy serves for `name`, once its chain verified up to pebble's root."""
    with socket.create_connection((web.proxy, 443), timeout=10) as raw:
        with _tls_context(web).wrap_socket(raw, server_hostname=name) as tls:
            return tls.getpeercert()


def _dig(web: Web, name: str, rtype: str, *extra: str) -> list[str]:
    out = subprocess.run(
        ["dig", f"@{web.ns}", "+short", "+norec", "+time=2", "+tries=2", name, rtype, *extra],
        capture_output=True, text=True, timeout=20,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return [line for line in out.stdout.splitlines() if line.strip()]


def _serial(web: Web) -> int:
    (soa,) = _dig(web, DOMAIN, "SOA")
    return int(soa.split()[2])


def _expected(web: Web, stack: Optional[Stack] = None) -> dict[tuple[str, str], set[str]]:
    stack = stack or web.stack
    want: dict[tuple[str, str], set[str]] = {}
    for r in zone.zone_records(stack, stack.dns):
        want.setdefault((r.name, r.type), set()).add(r.data)
    return want


# --- certificates --------------------------------------------------------------------------------------


def test_every_host_converges_and_certbot_obtains_each_certificate_from_the_acme_ca(web):
    for host, result in web.first.items():
        assert result.ok, f"{host}: {result.stdout}\n{result.stderr}"
    for name in certificates(web.stack):
        assert f"certificate for {name} obtained" in web.first["web1"].stdout
        link = web.lab.run("web1", ["readlink", f"{TLS_DIR}/{name}/fullchain.pem"]).stdout.strip()
        assert link == f"/etc/letsencrypt/live/{name}/fullchain.pem"
        key = web.lab.run("web1", ["readlink", f"{TLS_DIR}/{name}/privkey.pem"]).stdout.strip()
        assert key == f"/etc/letsencrypt/live/{name}/privkey.pem"


def test_the_served_certificates_chain_to_pebbles_root_and_cover_the_service_names(web):
    for name, domains in certificates(web.stack).items():
        for domain in domains:
            cert = _served_cert(web, domain)  # verified against pebble's root, hostname checked
            sans = {v for k, v in cert["subjectAltName"] if k == "DNS"}
            assert sans == set(domains), name


def test_a_second_converge_of_the_proxy_changes_nothing_and_asks_for_no_certificate(web):
    again = web.converge("web1")
    assert again.ok, again.stdout + again.stderr
    assert "done: 0 file(s) changed, 0 removed" in again.stdout
    assert "certificate for" not in again.stdout


def test_certbots_timer_service_renews_a_due_certificate_and_nginx_serves_the_new_one(web):
    name = f"loomio.{DOMAIN}"
    before = _served_cert(web, name)["serialNumber"]
    assert web.lab.run("web1", ["systemctl", "is-enabled", "certbot.timer"]).stdout.strip() == "enabled"
    # The private CA's bundle reaches the unit through a drop-in, which systemd read when it came.
    assert "converge: daemon-reload" in web.first["web1"].stdout
    env = web.lab.run("web1", ["systemctl", "show", "-p", "Environment", "--value", "certbot.service"]).stdout
    assert "REQUESTS_CA_BUNDLE=" in env
    # pebble's certificates last years: make this one due, as it would be 30 days before expiry.
    conf = "/etc/letsencrypt/renewal/loomio.conf"
    web.lab.run("web1", ["sed", "-i", "s/^# renew_before_expiry = .*/renew_before_expiry = 100000 days/", conf])
    try:
        # What certbot.timer starts, with the unit's own environment (not this test's).
        run = web.lab.run("web1", ["systemctl", "start", "certbot.service"], check=False, timeout=120)
        journal = web.lab.run("web1", ["journalctl", "-u", "certbot.service", "--no-pager", "-n", "30"], check=False).stdout
        assert run.returncode == 0, run.stderr + journal
    finally:
        web.lab.run("web1", ["sed", "-i", "s/^renew_before_expiry = 100000 days/# renew_before_expiry = 30 days/", conf])
    deadline = time.monotonic() + 10  # the deploy hook's reload: new workers take over
    while _served_cert(web, name)["serialNumber"] == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _served_cert(web, name)["serialNumber"] != before


# --- the sites ----------------------------------------------------------------------------------------


def test_each_vhost_answers_over_https_with_its_upstream(web):
    for name, service in ((DOMAIN, "www"), (f"loomio.{DOMAIN}", "loomio")):
        resp = _https(web, name, "/some/page?x=1")
        assert resp.status == 200, (name, resp.body[:300])
        echo = resp.json()
        assert echo["marker"] == service
        assert echo["path"] == "/some/page?x=1"
        assert echo["headers"]["host"] == name
        assert echo["headers"]["x-forwarded-proto"] == "https"
        # nginx reaches the upstream over the LAN.
        assert echo["peer"] == str(web.stack.hosts["web1"].lan_ip)


def test_the_upstream_sees_the_clients_address_not_a_forwarded_for_the_client_made_up(web):
    me = web.lab.root_address
    resp = _https(web, DOMAIN, "/", headers={"X-Forwarded-For": CLIENT_XFF, "X-Real-IP": CLIENT_XFF})
    headers = resp.json()["headers"]
    assert headers["x-forwarded-for"] == me
    assert headers["x-real-ip"] == me
    assert CLIENT_XFF not in json.dumps(headers)


# Headers a client can send that say where a request came from or what it asked for: none may
# reach an upstream as the client wrote it (the finding of issue 13, and their usual cousins).
CLIENT_FORWARDING_HEADERS = (
    "Forwarded", "Client-IP", "True-Client-IP", "X-Client-IP", "X-Forwarded-Port", "X-Forwarded-Prefix",
    "X-Forwarded-Server", "X-Forwarded-Host", "X-Original-URL", "X-Rewrite-URL", "X-Cluster-Client-IP",
    "X-Original-Forwarded-For", "X-Forwarded-Scheme", "X-Forwarded-Ssl", "X-Host", "X-Original-Host",
    "X-HTTP-Method-Override", "CF-Connecting-IP", "X_Forwarded_For",
)


def test_forwarding_headers_a_client_makes_up_never_reach_the_upstream(web):
    marker = "203.0.113.66-made-up"
    resp = _https(web, DOMAIN, "/", headers={h: marker for h in CLIENT_FORWARDING_HEADERS})
    assert resp.status == 200
    headers = resp.json()["headers"]
    assert marker not in json.dumps(headers), {k: v for k, v in headers.items() if marker in v}
    assert headers["x-forwarded-host"] == DOMAIN  # the one of these the proxy sets itself


def test_an_h2c_upgrade_is_refused_before_the_upstream(web):
    resp = _https(web, DOMAIN, "/", headers={"Upgrade": "h2c", "Connection": "Upgrade, HTTP2-Settings",
                                             "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"})
    assert resp.status == 400
    assert _https(web, DOMAIN, "/", headers={"Upgrade": "websocket, H2C"}).status == 400
    assert _https(web, DOMAIN, "/").status == 200


def test_plain_http_for_a_name_the_proxy_does_not_serve_gets_no_redirect(web):
    for host in ("attacker.example", "203.0.113.11"):
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            _http(web, host, "/phish")


def test_plain_http_redirects_permanently_to_https(web):
    for name in (DOMAIN, f"www.{DOMAIN}", f"loomio.{DOMAIN}", f"link.{DOMAIN}"):
        resp = _http(web, name, "/a/b?c=d")
        assert resp.status == 301, name
        assert resp.headers["Location"] == f"https://{name}/a/b?c=d"


def test_acme_challenges_are_answered_over_plain_http(web):
    root = web.lab.root_dir("web1") / "var/www/acme/.well-known/acme-challenge"
    root.mkdir(parents=True, exist_ok=True)
    (root / "lab-probe").write_text("probe-token\n")
    try:
        resp = _http(web, f"loomio.{DOMAIN}", "/.well-known/acme-challenge/lab-probe")
        assert resp.status == 200 and resp.body == b"probe-token\n"
    finally:
        (root / "lab-probe").unlink()


def test_www_redirects_to_the_apex(web):
    resp = _https(web, f"www.{DOMAIN}", "/join?ref=x")
    assert resp.status == 301
    assert resp.headers["Location"] == f"https://{DOMAIN}/join?ref=x"


def test_security_headers_on_every_vhost_and_no_nginx_version(web):
    for name, path in ((DOMAIN, "/"), (f"www.{DOMAIN}", "/"), (f"loomio.{DOMAIN}", "/"),
                       (f"link.{DOMAIN}", "/handbook"), (f"link.{DOMAIN}", "/no-such-keyword")):
        h = _https(web, name, path).headers
        assert h["Strict-Transport-Security"] == "max-age=63072000", name
        assert h["X-Content-Type-Options"] == "nosniff", name
        assert h["X-Frame-Options"] == "SAMEORIGIN", name
        assert h["Referrer-Policy"] == "strict-origin-when-cross-origin", name
        assert h["Server"] == "nginx", (name, h["Server"])
    assert _http(web, DOMAIN).headers["Server"] == "nginx"


def test_a_name_the_proxy_does_not_serve_is_refused_in_the_handshake(web):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # even a client that would accept any certificate gets none
    for name in (f"unknown.{DOMAIN}", "example.org", None):
        with socket.create_connection((web.proxy, 443), timeout=10) as raw:
            with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
                ctx.wrap_socket(raw, server_hostname=name).close()


# --- shortlinks ---------------------------------------------------------------------------------------


def _links(web: Web) -> dict[str, str]:
    return shortlinks.resolve(shortlinks.load(shortener_host=f"link.{DOMAIN}"))


def test_shortlinks_redirect_to_their_destination(web):
    links = _links(web)
    for keyword in ("handbook", "meet", "lists", "site"):
        resp = _https(web, f"link.{DOMAIN}", f"/{keyword}")
        assert resp.status == 302, keyword
        assert resp.headers["Location"] == links[keyword]
    assert _https(web, f"link.{DOMAIN}", "/meet").headers["Location"] == "https://meet.jit.si/hypha-coop-weekly"


def test_shortlink_keywords_ignore_case_and_a_trailing_slash(web):
    for path in ("/LoomIO", "/LOOMIO", "/loomio/", "/Handbook/"):
        resp = _https(web, f"link.{DOMAIN}", path)
        assert resp.status == 302, path
        assert resp.headers["Location"] == _links(web)[path.strip("/").lower()]


def test_a_shortlink_alias_goes_straight_to_the_final_destination(web):
    # agm -> vote -> loomio in shortlinks.csv: one redirect, to loomio's destination.
    resp = _https(web, f"link.{DOMAIN}", "/agm")
    assert resp.status == 302
    assert resp.headers["Location"] == "https://loomio.hypha.coop/"


def test_an_unknown_shortlink_gets_404_with_help(web):
    resp = _https(web, f"link.{DOMAIN}", "/no-such-keyword")
    assert resp.status == 404
    assert b"shortlinks.csv" in resp.body


# --- the zone -----------------------------------------------------------------------------------------


def test_the_name_server_answers_authoritatively(web):
    out = subprocess.run(["dig", f"@{web.ns}", "+norec", "+time=2", "+tries=2", DOMAIN, "SOA"],
                         capture_output=True, text=True, timeout=20).stdout
    assert re.search(r"flags: qr aa;", out), out
    assert "status: NOERROR" in out


def test_dig_returns_the_catalogs_a_mx_and_txt_records(web):
    want = _expected(web)
    proxy = web.proxy
    for name in (DOMAIN, f"www.{DOMAIN}", f"loomio.{DOMAIN}", f"link.{DOMAIN}"):
        assert _dig(web, name, "A") == [proxy], name
    assert _dig(web, f"ns1.{DOMAIN}", "A") == [web.ns]
    assert _dig(web, f"mail.{DOMAIN}", "A") == [str(web.stack.hosts["gw"].public_ipv4)]
    assert set(_dig(web, DOMAIN, "MX")) == want[(DOMAIN, "MX")] == {f"10 mail.{DOMAIN}."}
    assert set(_dig(web, DOMAIN, "NS")) == {f"ns1.{DOMAIN}."}
    assert set(_dig(web, DOMAIN, "TXT")) == want[(DOMAIN, "TXT")] == {'"v=spf1 mx -all"'}
    dmarc = _dig(web, f"_dmarc.{DOMAIN}", "TXT")
    assert set(dmarc) == want[(f"_dmarc.{DOMAIN}", "TXT")]
    assert "p=quarantine" in dmarc[0]
    dkim_name = f"{DKIM_SELECTOR}._domainkey.{DOMAIN}"
    dkim = _dig(web, dkim_name, "TXT")
    assert set(dkim) == want[(dkim_name, "TXT")]
    # The key split in 255-byte strings is whole again for a verifier.
    p = "".join(re.findall(r'"([^"]*)"', dkim[0])).split("p=", 1)[1]
    assert p == web.stack.dns.dkim[0].public_key
    assert set(_dig(web, DOMAIN, "CAA")) == want[(DOMAIN, "CAA")]


def test_the_serial_stays_when_nothing_changed_and_increases_when_a_record_does(web):
    before = _serial(web)
    assert before // 100 >= int(time.strftime("%Y%m%d", time.gmtime(time.time() - 3600)))  # YYYYMMDDnn, today's
    again = web.converge("dns")
    assert again.ok, again.stdout + again.stderr
    assert "zone hypha.coop" not in again.stdout and "reload named" not in again.stdout
    assert _serial(web) == before

    raw = copy.deepcopy(web.ls.raw)
    raw["dns"]["extra_records"] = [{"name": "_lab-check", "type": "TXT", "value": "changed by the lab"}]
    changed_stack = build_stack(raw, "prod")
    changed = web.converge("dns", changed_stack)
    assert changed.ok, changed.stdout + changed.stderr
    assert re.search(r"zone hypha.coop: changed \d+", changed.stdout), changed.stdout
    deadline = time.monotonic() + 10
    while _serial(web) == before and time.monotonic() < deadline:  # named reloads the zone asynchronously
        time.sleep(0.2)
    after = _serial(web)
    assert after > before
    assert _dig(web, f"_lab-check.{DOMAIN}", "TXT") == ['"changed by the lab"']

    back = web.converge("dns")  # the record goes again, with a newer serial still
    assert back.ok, back.stdout + back.stderr
    deadline = time.monotonic() + 10
    while _serial(web) == after and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _serial(web) > after
    assert _dig(web, f"_lab-check.{DOMAIN}", "TXT") == []


# --- TLS ----------------------------------------------------------------------------------------------

WEAK = re.compile(r"NULL|EXP|RC4|DES|IDEA|SEED|CAMELLIA|ARIA|MD5|anon|PSK|SRP|CBC|SHA$|-SHA1?$")


def _testssl(web: Web) -> list[dict]:
    out = web.tmp / "testssl.json"
    if out.exists():
        out.unlink()
    proc = subprocess.run(
        ["testssl", "--quiet", "--color", "0", "--warnings", "batch", "--nodns", "none", "--ip", web.proxy,
         "--connect-timeout", "5", "--openssl-timeout", "5", "-p", "-E", "--jsonfile", str(out),
         f"{DOMAIN}:443"],
        capture_output=True, text=True, timeout=240, cwd=web.tmp,
    )
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    findings = json.loads(out.read_text())
    assert not [f for f in findings if f["severity"] == "FATAL"], proc.stdout[-3000:]
    return findings


@pytest.fixture(scope="module")
def testssl_findings(web):
    return _testssl(web)


def test_testssl_finds_only_tls_1_2_and_1_3_offered(testssl_findings):
    by_id = {f["id"]: f["finding"] for f in testssl_findings}
    print("testssl:", "; ".join(f"{p} {by_id[p]}" for p in ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3")))
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert by_id[old].startswith("not offered"), (old, by_id[old])
    assert by_id["TLS1_2"].startswith("offered"), by_id["TLS1_2"]
    assert by_id["TLS1_3"].startswith("offered"), by_id["TLS1_3"]


def test_testssl_finds_no_weak_cipher(testssl_findings):
    offered = [f for f in testssl_findings if f["id"].startswith("cipher-")]
    assert offered, [f["id"] for f in testssl_findings]
    seen = []
    for f in offered:
        # e.g. "TLS 1.2   xc02c   ECDHE-ECDSA-AES256-GCM-SHA384     ECDH 253   AESGCM   256   TLS_ECDHE_..."
        m = re.match(r"(SSLv\d|TLS 1(?:\.\d)?)\s+x[0-9a-f]+\s+(\S+)", f["finding"])
        assert m, f["finding"]
        proto, name = m.groups()
        seen.append(f"{proto} {name}")
        assert proto in ("TLS 1.2", "TLS 1.3"), f["finding"]
        if proto == "TLS 1.2":
            assert re.match(r"(ECDHE|DHE)-", name) and re.search(r"GCM|CHACHA20", name), f["finding"]
        assert not WEAK.search(name), f["finding"]
        assert f["severity"] in ("OK", "INFO", "LOW"), f
    print("testssl: offered", ", ".join(seen))
