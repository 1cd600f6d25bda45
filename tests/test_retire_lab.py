"""Host tier, retiring a service (issue 16 item 5): the web edge lab (proxy, name server, upstream,
pebble) converged as prod with two retired services, one redirected and one gone, and a monitoring
host watching the catalog. Over real TLS the retired names answer 301 / 410, nothing reaches the
retired upstream, Prometheus has no probe for them, and the lab's name server still serves them."""

from __future__ import annotations

import json

import bcrypt
import pytest

from model.load import build_stack
from lab.hosts import Lab, stop_process
from lab.stack import boot_and_converge, web_lab_stack
from lab.subnets import subnets
from render.roles import monitoring as mr
from render.roles.reverse_proxy import certificates
from tests.test_web_lab import (
    DOMAIN,
    TOOLS,
    UPSTREAM_SCRIPT,
    UPSTREAMS,
    Web,
    _dig,
    _http,
    _https,
    _pebble_root,
    _served_cert,
    _start_pebble,
    _start_upstreams,
)
from tests.tools import lab_ready

pytestmark = pytest.mark.lab

PREFIX = "tret"
NETS = subnets(PREFIX)
FRONT, LAN, VPN = NETS.front, NETS.lan, NETS.vpn
REDIRECT = f"https://{DOMAIN}/meet-moved?from=meet&x=1"
# The retired service's old upstream still runs on its host: only the proxy's config stops it.
MEET_PORT = 9001
RETIRED_ON = "2026-11-30"


def _retire_lab_stack():
    ls = web_lab_stack(FRONT, LAN, VPN)
    raw = ls.raw
    raw["services"]["meet"] = {
        "host": "app", "port": MEET_PORT, "public": True, "domains": [f"meet.{DOMAIN}"],
        "retired": {"date": RETIRED_ON, "redirect": REDIRECT},
    }
    raw["services"]["pad"] = {"host": "app", "public": True, "domains": [f"pad.{DOMAIN}"], "retired": {"date": RETIRED_ON}}
    # The upstream host watches the catalog too: one host more would cost a boot and a converge.
    raw["hosts"]["app"]["roles"] = ["app", "monitoring"]
    raw["monitoring"] = {"scrape_interval": "2s", "ui": "vpn", "matrix": {"url": "http://127.0.0.1:9/matrix-webhook"}}
    ls.stack = build_stack(raw, "prod")
    hashes = json.dumps({"alice": bcrypt.hashpw(b"lab admin password", bcrypt.gensalt(4)).decode()})
    ls.late.update(mr.login_late_values(ls.stack, hashes))
    return ls


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    lab_ready(TOOLS, "retire")
    ls = _retire_lab_stack()
    tmp = tmp_path_factory.mktemp("retire")
    with Lab(PREFIX, ls.lab_hosts, front=str(FRONT), lan=str(LAN), lan_gateway=ls.lan_gateway) as lab:
        pebble, log = _start_pebble(ls, tmp)
        try:
            _start_upstreams(lab)
            lab.run("app", ["systemd-run", "--unit=fake-meet", "python3", UPSTREAM_SCRIPT, str(MEET_PORT), "meet"])
            first = boot_and_converge(lab, ls)
            yield Web(lab, ls, first, _pebble_root(ls), tmp)
        finally:
            stop_process(pebble)
            try:
                lab.run("app", ["systemctl", "stop", "fake-meet", *(f"fake-{n}" for n in UPSTREAMS)], check=False)
            except Exception:  # noqa: BLE001 - the host is gone anyway when the lab goes down
                pass
            print(f"pebble log: {log}")


def test_every_host_converges_and_the_retired_names_get_their_certificates(web):
    for host, result in web.first.items():
        assert result.ok, f"{host}: {result.stdout}\n{result.stderr}"
    for name in ("meet", "pad"):
        assert name in certificates(web.stack)
        assert f"certificate for {name} obtained" in web.first["web1"].stdout
        # Verified against pebble's root with the name checked: no certificate error for old links.
        cert = _served_cert(web, f"{name}.{DOMAIN}")
        assert {v for k, v in cert["subjectAltName"] if k == "DNS"} == {f"{name}.{DOMAIN}"}


def test_a_retired_service_answers_its_permanent_redirect_over_https(web):
    for path in ("/", "/room/weekly?pw=1"):
        resp = _https(web, f"meet.{DOMAIN}", path)
        assert resp.status == 301, resp.body[:200]
        assert resp.headers["Location"] == REDIRECT
        assert resp.headers["Strict-Transport-Security"] == "max-age=63072000"


def test_a_retired_service_without_a_redirect_answers_410_gone(web):
    resp = _https(web, f"pad.{DOMAIN}", "/p/minutes")
    assert resp.status == 410
    assert resp.body.decode() == f"pad.{DOMAIN} was retired on {RETIRED_ON} and is gone."
    assert resp.headers["Content-Type"].startswith("text/plain")


def test_port_80_answers_the_same_at_once_and_still_serves_acme_challenges(web):
    resp = _http(web, f"meet.{DOMAIN}", "/anything")
    assert resp.status == 301 and resp.headers["Location"] == REDIRECT
    assert _http(web, f"pad.{DOMAIN}", "/").status == 410
    token = "retire-lab-token"
    web.lab.run("web1", ["sh", "-c", f"mkdir -p /var/www/acme/.well-known/acme-challenge && echo ok > /var/www/acme/.well-known/acme-challenge/{token}"])
    try:
        challenge = _http(web, f"pad.{DOMAIN}", f"/.well-known/acme-challenge/{token}")
        assert challenge.status == 200 and challenge.body == b"ok\n"
    finally:
        web.lab.run("web1", ["rm", "-f", f"/var/www/acme/.well-known/acme-challenge/{token}"])
    # A live name is still sent to HTTPS.
    assert _http(web, f"loomio.{DOMAIN}", "/x").headers["Location"] == f"https://loomio.{DOMAIN}/x"


def test_nothing_reaches_the_retired_upstream_any_more(web):
    app = str(web.stack.hosts["app"].lan_ip)
    # It runs, on its host...
    local = web.lab.run("app", ["curl", "-s", "--max-time", "5", f"http://127.0.0.1:{MEET_PORT}/"], check=False)
    assert local.returncode == 0 and '"marker": "meet"' in local.stdout
    # ...but the host's firewall no longer lets the proxy (or anyone) in, while loomio's port is open.
    blocked = web.lab.run("web1", ["curl", "-s", "--max-time", "3", f"http://{app}:{MEET_PORT}/"], check=False)
    assert blocked.returncode != 0, blocked.stdout
    live = web.lab.run("web1", ["curl", "-s", "--max-time", "5", f"http://{app}:{UPSTREAMS['loomio']}/"], check=False)
    assert live.returncode == 0 and '"marker": "loomio"' in live.stdout


def test_the_monitoring_host_has_no_probe_for_a_retired_service(web):
    config = web.lab.run("app", ["cat", "/etc/prometheus/prometheus.yml"]).stdout
    assert f"https://loomio.{DOMAIN}/" in config
    assert f"meet.{DOMAIN}" not in config and f"pad.{DOMAIN}" not in config
    blackbox = web.lab.run("app", ["cat", "/etc/prometheus/blackbox.yml"]).stdout
    assert "https_loomio" in blackbox and "https_meet" not in blackbox and "https_pad" not in blackbox
    # What Prometheus itself loaded, not only the file.
    lan = str(web.stack.hosts["app"].lan_ip)
    out = web.lab.run("app", ["curl", "-s", "--max-time", "10", f"http://{lan}:9090/api/v1/targets?state=active"]).stdout
    instances = {t["labels"].get("instance") for t in json.loads(out)["data"]["activeTargets"]}
    assert f"https://loomio.{DOMAIN}/" in instances
    assert not [i for i in instances if i and ("meet." in i or "pad." in i)], instances


def test_the_retired_names_stay_in_the_zone_the_lab_name_server_serves(web):
    proxy = str(web.stack.hosts["web1"].public_ipv4)
    for name in (f"meet.{DOMAIN}", f"pad.{DOMAIN}", f"loomio.{DOMAIN}"):
        assert _dig(web, name, "A") == [proxy], name
