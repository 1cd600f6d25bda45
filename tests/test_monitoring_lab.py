"""Host tier, monitoring: a monitoring host converged from bare watches the lab's hosts and services,
its Prometheus asked over HTTP from where VPN members arrive (the gateway), as the catalog says."""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from dataclasses import dataclass

import bcrypt
import paramiko
import pytest

from lab.hosts import Lab, available, layout
from lab.stack import LabStack, boot_and_converge, lab_stack
from lab.subnets import subnets
from ops.remote import Result, converge
from render.roles import monitoring as mr
from model.load import build_stack
from model.derive_monitoring import ALERTMANAGER_PORT, PROMETHEUS_PORT

pytestmark = pytest.mark.lab

PREFIX = "hmo"
FRONT, LAN, VPN = subnets(PREFIX).front, subnets(PREFIX).lan, subnets(PREFIX).vpn
HOSTS = ("gw", "app", "mon")  # lab_stack gives the last one the monitoring role
SERVICE_PORT = 8080
# Short, so a stopped exporter shows within seconds; the production default is 30s.
SCRAPE_INTERVAL = "2s"
ALICE_PASSWORD = "lab admin password"
# Run with this machine's Python inside a lab namespace: prints the body, fails on an error or a timeout.
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())"


@dataclass
class Mon:
    lab: Lab
    ls: LabStack
    first: dict[str, Result]

    @property
    def stack(self):
        return self.ls.stack

    def prometheus(self) -> str:
        return f"http://{self.stack.hosts['mon'].lan_ip}:{PROMETHEUS_PORT}"

    def fetch(self, url: str, *, via: str = "gw", timeout: float = 5, check: bool = True):
        """GET `url` from a lab namespace (default: the gateway's, where VPN traffic enters the LAN)."""
        return self.lab.netns_exec(via, [sys.executable, "-c", FETCH, url, str(timeout)], check=check)

    def get(self, path: str, *, via: str = "gw") -> dict:
        """The Prometheus HTTP API, asked over the network."""
        return json.loads(self.fetch(self.prometheus() + path, via=via).stdout)

    def query(self, promql: str) -> list[dict]:
        body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def targets(self) -> list[dict]:
        return self.get("/api/v1/targets?state=active")["data"]["activeTargets"]


def _monitoring_lab_stack() -> LabStack:
    """A prod-like lab stack whose catalog has one internal HTTP service and a monitoring section of its own."""
    ls = lab_stack("prod", hosts=HOSTS, members=(), front=FRONT, lan=LAN, vpn=VPN)
    raw = ls.raw
    raw["services"] = {"www": {"host": "app", "port": SERVICE_PORT, "health_path": "/"}}
    raw["monitoring"] = {
        "scrape_interval": SCRAPE_INTERVAL,
        "ui": "vpn",
        "group_wait": "1s",
        # Alertmanager's chat room: a port on the monitoring host's own loopback where nothing listens.
        "matrix": {"url": "http://127.0.0.1:9/matrix-webhook"},
    }
    ls.stack = build_stack(raw, "prod")
    # Alertmanager's guard asks for logins: alice's (an admin) from the secret monitoringUiPasswordHashes.
    hashes = json.dumps({"alice": bcrypt.hashpw(ALICE_PASSWORD.encode(), bcrypt.gensalt(4)).decode()})
    ls.late.update(mr.login_late_values(ls.stack, hashes))
    return ls


def _wait(what: str, seconds: float, check):
    """Poll `check` (bounded) until it returns something truthy; fail saying what did not happen."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - a daemon still starting; report the last error
            last = exc
        time.sleep(0.5)
    pytest.fail(f"{what} did not happen within {seconds} s (last: {last!r})")


@pytest.fixture(scope="module")
def mon():
    ok, why = available()
    if not ok:
        pytest.skip(f"lab unavailable: {why}")
    ls = _monitoring_lab_stack()
    with Lab(PREFIX, layout(HOSTS[0], HOSTS[1:], front=str(FRONT), lan=str(LAN)), front=str(FRONT), lan=str(LAN)) as lab:
        first = boot_and_converge(lab, ls)
        # The service stand-in: the application is out of scope, something answering on its port is not.
        lab.run("app", ["systemd-run", "--unit=fake-www", "python3", "-m", "http.server", str(SERVICE_PORT), "--directory", "/etc"])
        m = Mon(lab, ls, first)
        try:
            yield m
        finally:
            lab.run("app", ["systemctl", "stop", "fake-www"], check=False)


def test_the_monitoring_host_converges_with_prometheus_alertmanager_and_blackbox_running(mon):
    log = mon.first["mon"].stdout
    for path in (mr.PROMETHEUS_CONFIG, mr.RULES_FILE, mr.ALERTMANAGER_CONFIG, mr.BLACKBOX_CONFIG):
        assert f"changed {path}" in log
    for unit in (mr.PROMETHEUS_UNIT, mr.ALERTMANAGER_UNIT, mr.BLACKBOX_UNIT):
        assert mon.lab.run("mon", ["systemctl", "is-active", unit], check=False).stdout.strip() == "active", unit


def test_every_catalog_target_is_up(mon):
    jobs = mr.scrape_jobs(mon.stack, mon.stack.monitoring)
    # A probe's instance is the URL it checks; every other target's, its address.
    expected = {(j["job_name"], sc["labels"].get("url", t)) for j in jobs for sc in j["static_configs"] for t in sc["targets"]}

    def all_up():
        targets = mon.targets()
        seen = {(t["labels"]["job"], t["labels"]["instance"]) for t in targets}
        down = [(t["scrapeUrl"], t["lastError"]) for t in targets if t["health"] != "up"]
        if seen != expected or down:
            raise AssertionError(f"missing {expected - seen}, unexpected {seen - expected}, down {down}")
        return seen, targets

    _, targets = _wait("every catalog target up", 60, all_up)
    hosts = {t["labels"]["host"] for t in targets if t["labels"]["job"] == "node"}
    assert hosts == set(mon.stack.hosts)
    for t in targets:
        assert t["labels"]["stack"] == "prod" and t["labels"]["role"], t["labels"]


def test_a_blackbox_probe_of_the_lab_service_succeeds(mon):
    url = f"http://{mon.stack.hosts['app'].lan_ip}:{SERVICE_PORT}/"
    result = _wait("a successful probe of the www service", 30, lambda: [
        r for r in mon.query('probe_success{job="probe_http", service="www"}') if r["value"][1] == "1"
    ])
    assert result[0]["metric"]["instance"] == url and result[0]["metric"]["host"] == "app"
    status = mon.query('probe_http_status_code{service="www"}')
    assert status[0]["value"][1] == "200"


def test_the_alert_rules_are_loaded_and_alertmanager_is_connected(mon):
    groups = mon.get("/api/v1/rules")["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"InstanceDown", "ProbeFailing", "BackupTooOld", "CertificateExpiringSoon"} <= names
    alertmanagers = mon.get("/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [a["url"] for a in alertmanagers] == [f"http://{mon.stack.hosts['mon'].lan_ip}:{ALERTMANAGER_PORT}/api/v2/alerts"]


def test_stopping_node_exporter_on_a_host_takes_its_target_down(mon):
    up = 'up{job="node", host="app"}'
    _wait("app's node_exporter up", 30, lambda: [r for r in mon.query(up) if r["value"][1] == "1"])
    mon.lab.run("app", ["systemctl", "stop", "prometheus-node-exporter"])
    try:
        started = time.monotonic()
        _wait("app's target down", 30, lambda: [r for r in mon.query(up) if r["value"][1] == "0"])
        print(f"app's target went down {time.monotonic() - started:.1f} s after node_exporter stopped")
        # Only that one: every other host's node_exporter is still up.
        others = {r["metric"]["host"]: r["value"][1] for r in mon.query('up{job="node", host!="app"}')}
        assert others == {h: "1" for h in mon.stack.hosts if h != "app"}
    finally:
        mon.lab.run("app", ["systemctl", "start", "prometheus-node-exporter"])
    _wait("app's target up again", 30, lambda: [r for r in mon.query(up) if r["value"][1] == "1"])


def test_the_uis_answer_where_vpn_members_arrive_and_not_elsewhere_on_the_lan(mon):
    """ui: vpn. The gateway masquerades VPN members to its LAN address: that is the one source let in."""
    assert mon.get("/api/v1/status/buildinfo")["status"] == "success"
    am = f"http://{mon.stack.hosts['mon'].lan_ip}:{ALERTMANAGER_PORT}/-/healthy"
    # Alertmanager's guard answers, asking for a login.
    assert mon.lab.netns_exec("gw", [sys.executable, "-c", CALL, am, "", "GET", ""]).stdout.split()[0] == "401"
    for url in (mon.prometheus() + "/-/healthy", am):
        refused = mon.fetch(url, via="app", timeout=3, check=False)
        assert refused.returncode != 0, f"{url} answered another LAN host"
        assert "timed out" in refused.stderr, refused.stderr  # dropped by the firewall, not refused by a daemon


# Asks with an optional basic login and method from a lab namespace; prints the status and the body.
CALL = (
    "import base64, sys, urllib.request, urllib.error\n"
    "url, login, method, body = sys.argv[1:5]\n"
    "h = {'Content-Type': 'application/json'}\n"
    "if login: h['Authorization'] = 'Basic ' + base64.b64encode(login.encode()).decode()\n"
    "req = urllib.request.Request(url, body.encode() if body else None, h, method=method)\n"
    "try:\n    r = urllib.request.urlopen(req, timeout=5); print(r.status); print(r.read().decode())\n"
    "except urllib.error.HTTPError as e:\n    print(e.code)\n"
)


def test_alertmanager_asks_for_a_login_shows_no_webhook_and_lets_an_admin_silence(mon):
    am = f"http://{mon.stack.hosts['mon'].lan_ip}:{ALERTMANAGER_PORT}"

    def call(path: str, login: str = "", method: str = "GET", body: str = "") -> list[str]:
        out = mon.lab.netns_exec("gw", [sys.executable, "-c", CALL, am + path, login, method, body]).stdout
        return out.split("\n", 1)

    assert call("/api/v2/status")[0] == "401"
    status, body = call("/api/v2/status", f"alice:{ALICE_PASSWORD}")
    assert status == "200" and "matrix-webhook" not in body and mr.RELAY_PATH in body
    silence = json.dumps({"matchers": [{"name": "alertname", "value": "LabTest", "isRegex": False}],
                          "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
                          "createdBy": "alice", "comment": "lab"})
    assert call("/api/v2/silences", "alice:wrong", "POST", silence)[0] == "401"
    assert call("/api/v2/silences", f"alice:{ALICE_PASSWORD}", "POST", silence)[0] == "200"
    # Prometheus' own pushes arrive through the same guard.
    alertmanagers = mon.get("/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert alertmanagers and not mon.get("/api/v1/alertmanagers")["data"]["droppedAlertmanagers"]


def test_a_second_converge_of_the_monitoring_host_changes_and_restarts_nothing(mon):
    before = mon.lab.run("mon", ["systemctl", "show", "-p", "MainPID", mr.PROMETHEUS_UNIT, mr.ALERTMANAGER_UNIT, mr.BLACKBOX_UNIT]).stdout
    key, script = mon.ls.keys["deploy"].private_openssh, mon.ls.script("mon")
    try:
        again = converge(mon.stack, "mon", key, script=script)
    except paramiko.SSHException:  # a jump channel timing out on a loaded machine: once more, as boot_and_converge does
        time.sleep(3)
        again = converge(mon.stack, "mon", key, script=script)
    assert "done: 0 file(s) changed, 0 removed" in again.stdout, again.stdout
    after = mon.lab.run("mon", ["systemctl", "show", "-p", "MainPID", mr.PROMETHEUS_UNIT, mr.ALERTMANAGER_UNIT, mr.BLACKBOX_UNIT]).stdout
    assert after == before
