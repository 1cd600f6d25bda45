"""Monitoring, file tier: what the monitoring host gets is accepted by the tools that read it (promtool,
amtool, blackbox_exporter, systemd), every alert is unit tested firing and quiet, routing and inhibition
are shown on a real Alertmanager, and the members' view behind its login on a real Prometheus (the
program tier is tests/test_monitoring_model.py)."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import bcrypt
import pytest
import yaml

from lab.hosts import stop_process
from render.roles import monitoring as mr
from render.converge import converge_script
from render.plan import LATE_MARK
from render.roles import host_plan
from model import derive
from model.load import build_stack
from model.derive_monitoring import ALERTMANAGER_PORT, PROMETHEUS_PORT, monitoring_host
from tests.program_runs import STACKS, model, raw
from tests.tools import need as _need

pytestmark = pytest.mark.files

PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "hypha.rules.test.yml"
ALICE_PASSWORD = "correct horse battery staple"
# The secret monitoringUiPasswordHashes: alice and bob log in to prod; carol has a hash but no login there.
HASHES = json.dumps({n: bcrypt.hashpw(ALICE_PASSWORD.encode(), bcrypt.gensalt(4)).decode() for n in ("alice", "bob", "carol")})
SINK = "http://127.0.0.1:9/matrix-webhook"  # discard port: the static checks never send anything


def late_values(stack, matrix_url: str = SINK) -> dict[str, str]:
    """The values components/monitoring.py would make from these secrets."""
    return {
        mr.LATE_SMTP_PASSWORD: "smtp-secret",
        mr.LATE_MATRIX_URL: mr.nginx_string(matrix_url, "matrix url"),
        mr.LATE_PVE_TOKEN: mr.yaml_scalar("pve-token-secret"),
        **mr.login_late_values(stack, HASHES),
    }


def monitoring_files(stack, values=None) -> dict[str, str]:
    """The monitoring host's files of the role, late values filled in as the host receives them."""
    values = values or late_values(stack)
    plan = host_plan(stack, monitoring_host(stack))
    return {
        f.path: LATE_MARK.sub(lambda m: values[m.group(1)], f.content)
        for f in plan.files
        if f.path.startswith(("/etc/prometheus/", "/etc/default/prometheus")) or f.path == mr.PVE_UNIT_FILE
    }


def write_tree(stack, root: Path, values=None) -> dict[str, Path]:
    """The files under `root`, with /etc/prometheus/ pointing there, so promtool follows rule and password files."""
    out = {}
    for path, content in monitoring_files(stack, values).items():
        p = root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content.replace("/etc/prometheus/", f"{root}/etc/prometheus/"))
        out[path] = p
    return out


def variant(stack: str, **monitoring) -> dict:
    cfg = raw(stack)
    cfg["monitoring"] = {**cfg["monitoring"], **monitoring}
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode} before answering {url}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers (e.g. 401): up
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered {url} in {seconds} s")


# --- Prometheus: config, targets from the catalog ------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_prometheus_config_passes_promtool_check_config_with_its_rules(tmp_path, stack):
    files = write_tree(model(stack), tmp_path)
    result = subprocess.run(
        [_need("promtool", "prometheus"), "check", "config", str(files[mr.PROMETHEUS_CONFIG])], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout and f"{len(_rules())} rules found" in result.stdout


def test_promtool_check_config_would_catch_a_broken_config(tmp_path):
    files = write_tree(model("prod"), tmp_path)
    path = files[mr.PROMETHEUS_CONFIG]
    path.write_text(path.read_text().replace("scrape_interval:", "scrape_intervall:", 1))
    assert subprocess.run([_need("promtool", "prometheus"), "check", "config", str(path)], capture_output=True).returncode != 0


def _targets(stack) -> dict[str, list[dict]]:
    config = yaml.safe_load(monitoring_files(stack)[mr.PROMETHEUS_CONFIG])
    return {
        job["job_name"]: [{"target": t, **sc.get("labels", {})} for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }


def test_every_public_service_is_probed_through_the_proxy_with_its_name_and_its_certificate(tmp_path):
    m = model("prod")
    proxy_lan = m.hosts["web1"].lan_ip
    probes = {t["service"]: t for t in _targets(m)["probe_http"]}
    blackbox = yaml.safe_load(monitoring_files(m)[mr.BLACKBOX_CONFIG])["modules"]
    for name, svc in m.services.items():
        if not svc.public:
            continue
        p = probes[name]
        assert p["target"] == f"https://{proxy_lan}{svc.health_path}" and p["url"] == f"https://{svc.domains[0]}{svc.health_path}"
        http = blackbox[p["module"]]["http"]
        # The name members use, as Host and as SNI (the certificate checked is the one they get).
        assert http["headers"]["Host"] == http["tls_config"]["server_name"] == svc.domains[0]
        assert http["fail_if_not_ssl"] is True and http["tls_config"]["insecure_skip_verify"] is False
    # The shortener's "/" is its own help page; the UIs must refuse a visitor without the login.
    assert blackbox["https_link"]["http"]["valid_status_codes"] == [404]
    assert blackbox["https_prometheus"]["http"]["valid_status_codes"] == [401]
    assert blackbox["https_alertmanager"]["http"]["valid_status_codes"] == [401]
    assert "valid_status_codes" not in blackbox["https_loomio"]["http"]  # 2xx


def test_proxmox_node_metrics_come_from_the_pve_exporter_with_a_read_only_token(tmp_path):
    m = model("prod")
    (pve,) = _targets(m)["pve"]
    assert pve["target"] == "127.0.0.1:9221" and pve["host"] == "kvm1.hypha.coop"
    files = monitoring_files(m)
    config = yaml.safe_load(files[mr.PVE_CONFIG])["default"]
    assert config == {"user": "prometheus@pve", "token_name": "monitoring", "token_value": "pve-token-secret", "verify_ssl": True}
    assert "pve_exporter" not in json.dumps(_targets(model("staging")))  # staging leaves the node to prod


def test_the_pve_exporter_unit_passes_systemd_analyze_verify(tmp_path):
    unit = monitoring_files(model("prod"))[mr.PVE_UNIT_FILE]
    assert f"ExecStart={mr.PVE_VENV}/bin/pve_exporter --config.file={mr.PVE_CONFIG} --web.listen-address=127.0.0.1:9221" in unit
    # verify wants the executable to exist: point it at a stand-in where the venv would be.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "pve_exporter").write_text("#!/bin/sh\n")
    (venv / "bin" / "pve_exporter").chmod(0o755)
    path = tmp_path / "prometheus-pve-exporter.service"
    path.write_text(unit.replace(mr.PVE_VENV, str(venv)))
    result = subprocess.run([_need("systemd-analyze", "systemd"), "verify", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True).stderr.strip() == ""


def test_the_converge_installs_the_pinned_pve_exporter_only_when_missing(tmp_path):
    """The install step run for real, with a stand-in python3 that records what pip is asked."""
    venv = tmp_path / "opt" / "prometheus-pve-exporter"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text(
        '#!/bin/sh\n[ "$1 $2" = "-m venv" ] || exit 9\nmkdir -p "$3/bin"\n'
        f'printf \'#!/bin/sh\\necho "$*" >>{tmp_path}/pip.log\\n\' >"$3/bin/pip"\n'
        'printf \'#!/bin/sh\\n\' >"$3/bin/pve_exporter"\nchmod +x "$3/bin/pip" "$3/bin/pve_exporter"\n'
    )
    (fake / "python3").chmod(0o755)
    step = mr.pve_install_step(model("prod").monitoring).replace(mr.PVE_VENV, str(venv))
    script = f'set -eu\nSTAGE={tmp_path}\n: >"$STAGE/units"\nlog() {{ echo "converge: $*"; }}\n{step}\n'
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    first = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    assert "installed prometheus-pve-exporter 3.10.2" in first.stdout
    assert (tmp_path / "pip.log").read_text().split() == ["install", "-q", "--disable-pip-version-check", "prometheus-pve-exporter==3.10.2"]
    assert (tmp_path / "units").read_text() == f"restart {mr.PVE_UNIT}\n"
    second = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env)
    assert second.returncode == 0 and second.stdout == "", "an installed release must not be installed again"
    (venv / "hypha-release").write_text("3.9.0\n")
    assert "installed" in subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env).stdout


# --- alert rules: checked, every alert unit tested both ways -------------------------------------------


def _rules() -> list[dict]:
    doc = yaml.safe_load(mr.rules(model("prod")))
    return [r for g in doc["groups"] for r in g["rules"]]


def test_alert_rules_pass_promtool_check_rules(tmp_path):
    path = tmp_path / "hypha.rules.yml"
    path.write_text(mr.rules(model("prod")))
    result = subprocess.run([_need("promtool", "prometheus"), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _unit_tests(tmp_path: Path, rules_text: str, alert: str | None = None) -> subprocess.CompletedProcess:
    """promtool's unit tests of `rules_text`: all of them, or with `alert` only the test groups that
    test that alert (a failure among those fails the whole file too; the others cost seconds)."""
    (tmp_path / "hypha.rules.yml").write_text(rules_text)
    if alert is None:
        shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    else:
        doc = yaml.safe_load(PROMTOOL_TESTS.read_text())
        doc["tests"] = [t for t in doc["tests"] if any(c["alertname"] == alert for c in t["alert_rule_test"])]
        assert doc["tests"], f"{alert}: no unit test"
        (tmp_path / PROMTOOL_TESTS.name).write_text(yaml.safe_dump(doc))
    return subprocess.run(
        [_need("promtool", "prometheus"), "test", "rules", PROMTOOL_TESTS.name], cwd=tmp_path, capture_output=True, text=True
    )


def test_every_alert_fires_and_stays_quiet_in_promtool_unit_tests(tmp_path):
    result = _unit_tests(tmp_path, mr.rules(model("prod")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not():
    cases = [c for t in yaml.safe_load(PROMTOOL_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    for alert in (r["alert"] for r in _rules()):
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"{alert}: no unit test where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert}: no unit test where it stays quiet"


@pytest.mark.parametrize("wait, quiet_at_3m, fires_by_10m", [("5m", True, True), ("2m", False, True), ("15m", True, False)])
def test_an_alert_wait_from_config_is_the_wait_prometheus_evaluates(tmp_path, wait, quiet_at_3m, fires_by_10m):
    # The unit test of MemoryPressure expects nothing at 3 minutes and the alert at 10 (its rule's 5m):
    # a shorter wait breaks the first expectation, a longer one the second, in promtool's own evaluation.
    cfg = raw("prod")
    cfg["monitoring"]["alert_waits"] = {"MemoryPressure": wait}
    result = _unit_tests(tmp_path, mr.rules(build_stack(cfg, "prod")), "MemoryPressure")
    out = result.stdout + result.stderr
    assert (result.returncode == 0) == (quiet_at_3m and fires_by_10m), out
    assert ("time: 3m," not in out) == quiet_at_3m, out
    assert ("time: 10m," not in out) == fires_by_10m, out


@pytest.mark.parametrize(
    "broken",
    [
        ("> 93600", "> 99999999"),  # a backup that is days old would no longer page
        ('state="failed"', 'state="activating"'),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(tmp_path, broken):
    text = mr.rules(model("prod"))
    assert broken[0] in text
    alert = next(r["alert"] for r in _rules() if broken[0] in r["expr"])
    result = _unit_tests(tmp_path, text.replace(broken[0], broken[1], 1), alert)
    assert result.returncode != 0, f"the unit tests did not notice {broken}"


# --- Alertmanager: routing, grouping, inhibition -------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_alertmanager_config_passes_amtool_check_config(tmp_path, stack):
    files = write_tree(model(stack), tmp_path)
    result = subprocess.run(
        [_need("amtool", "prometheus-alertmanager"), "check-config", str(files[mr.ALERTMANAGER_CONFIG])],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _routes(path: Path, *labels: str) -> str:
    result = subprocess.run(
        [_need("amtool", "prometheus-alertmanager"), "config", "routes", "test", f"--config.file={path}", *labels],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_critical_alerts_page_by_mail_and_matrix_and_the_rest_go_to_the_chat_room(tmp_path):
    files = write_tree(model("prod"), tmp_path)
    path = files[mr.ALERTMANAGER_CONFIG]
    assert _routes(path, "alertname=InstanceDown", "host=loomio", "severity=critical") == "page"
    assert _routes(path, "alertname=BackupTooOld", "host=bw1", "severity=critical") == "page"
    assert _routes(path, "alertname=DiskSpaceLow", "host=backup1", "severity=warning") == "chat"
    config = yaml.safe_load(path.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers["page"]["email_configs"][0]["to"] == "infra@hypha.coop"
    # The room through the guard's relay, which holds its real URL; the SMTP password in a file.
    relay = f"http://{mr.RELAY_LISTEN}{mr.RELAY_PATH}"
    assert receivers["page"]["webhook_configs"][0]["url"] == relay
    assert "email_configs" not in receivers["chat"] and receivers["chat"]["webhook_configs"][0]["url"] == relay
    assert config["global"]["smtp_auth_password_file"] == str(files[mr.SMTP_PASSWORD_FILE])
    assert files[mr.SMTP_PASSWORD_FILE].read_text() == "smtp-secret"
    assert "smtp-secret" not in path.read_text() and SINK not in path.read_text()
    assert config["route"]["group_by"] == ["alertname", "host"]


def test_without_a_chat_room_every_alert_goes_by_mail_and_staging_mails_nobody(tmp_path):
    cfg = variant("prod", matrix=None)
    del cfg["monitoring"]["matrix"]
    files = write_tree(build_stack(cfg, "prod"), tmp_path)
    receivers = {r["name"]: r for r in yaml.safe_load(files[mr.ALERTMANAGER_CONFIG].read_text())["receivers"]}
    assert _routes(files[mr.ALERTMANAGER_CONFIG], "severity=warning") == "chat"
    assert receivers["chat"]["email_configs"] == receivers["page"]["email_configs"]
    staging = yaml.safe_load(monitoring_files(model("staging"))[mr.ALERTMANAGER_CONFIG])
    assert all("email_configs" not in r for r in staging["receivers"]) and "smtp_smarthost" not in staging["global"]


class _Sink(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_an_instance_that_is_down_does_not_also_page_for_its_probes(tmp_path):
    """A real Alertmanager on loopback with the rendered config, its chat room a local webhook."""
    _Sink.received = []
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{sink.server_address[1]}/hook"
    cfg = variant("prod", group_wait="1s", group_interval="1s", matrix={"url": url})
    del cfg["monitoring"]["email"]  # nothing may try a real mail server
    stack = build_stack(cfg, "prod")
    files = write_tree(stack, tmp_path, late_values(stack, url))
    # The relay in front of the room is the guard's (test_alertmanager_guard.py); here the room itself.
    am_config = files[mr.ALERTMANAGER_CONFIG]
    am_config.write_text(am_config.read_text().replace(f"http://{mr.RELAY_LISTEN}{mr.RELAY_PATH}", url))
    port = _free_port()
    am = subprocess.Popen(
        [_need("prometheus-alertmanager", "prometheus-alertmanager"), f"--config.file={files[mr.ALERTMANAGER_CONFIG]}",
         f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    api = f"http://127.0.0.1:{port}/api/v2"
    try:
        _wait_http(f"http://127.0.0.1:{port}/-/ready", 15, am)

        def post(*alerts):
            body = json.dumps([{"labels": a} for a in alerts]).encode()
            urllib.request.urlopen(urllib.request.Request(f"{api}/alerts", body, {"Content-Type": "application/json"}), timeout=5)

        def inhibited() -> dict:
            alerts = json.load(urllib.request.urlopen(f"{api}/alerts", timeout=5))
            return {(a["labels"]["alertname"], a["labels"]["host"]): bool(a["status"]["inhibitedBy"]) for a in alerts}

        probe = {"alertname": "ProbeFailing", "severity": "critical", "proxy": "web1", "job": "probe_http"}
        post(
            {"alertname": "InstanceDown", "severity": "critical", "host": "loomio", "job": "node"},
            {**probe, "host": "loomio", "service": "loomio"},
            {**probe, "host": "bw1", "service": "www"},
        )
        assert inhibited() == {("InstanceDown", "loomio"): False, ("ProbeFailing", "loomio"): True, ("ProbeFailing", "bw1"): False}
        # The proxy going down silences every probe behind it, not only those of its own services.
        post({"alertname": "InstanceDown", "severity": "critical", "host": "web1", "proxy": "web1", "job": "node"})
        assert inhibited()[("ProbeFailing", "bw1")] is True
        def sent() -> set:
            return {(a["labels"]["alertname"], a["labels"]["host"]) for n in list(_Sink.received) for a in n["alerts"]}

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not {("InstanceDown", "loomio"), ("InstanceDown", "web1")} <= sent():
            time.sleep(0.2)
        time.sleep(1.5)  # a group_interval more: an inhibited alert would have been sent by now
        sent = sent()
        assert ("InstanceDown", "loomio") in sent and ("InstanceDown", "web1") in sent
        assert ("ProbeFailing", "loomio") not in sent
        # Grouped by alert and host: one notification per group, each with its own receiver.
        assert all(n["receiver"] == "page" and set(n["groupLabels"]) == {"alertname", "host"} for n in _Sink.received)
    finally:
        stop_process(am)
        sink.shutdown()


# --- blackbox_exporter ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_blackbox_config_passes_the_exporters_own_check(tmp_path, stack):
    files = write_tree(model(stack), tmp_path)
    result = subprocess.run(
        [_need("prometheus-blackbox-exporter", "prometheus-blackbox-exporter"), "--config.check",
         f"--config.file={files[mr.BLACKBOX_CONFIG]}"], capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    broken = files[mr.BLACKBOX_CONFIG]
    broken.write_text(broken.read_text().replace("follow_redirects:", "follow_redirect:", 1))
    assert subprocess.run(
        ["prometheus-blackbox-exporter", "--config.check", f"--config.file={broken}"], capture_output=True
    ).returncode != 0


# --- the members' view: over the VPN or behind the proxy with a login ----------------------------------


def test_ui_proxy_publishes_both_uis_to_the_proxy_only_behind_the_members_login(tmp_path):
    m = model("prod")
    proxy = f"{m.hosts['web1'].lan_ip}/32"
    rules = {(r.port, r.source) for r in derive.inbound_rules(m, "monitor1")}
    assert {s for p, s in rules if p in (PROMETHEUS_PORT, ALERTMANAGER_PORT)} == {proxy}
    files = write_tree(m, tmp_path)
    web = files[mr.WEB_CONFIG]
    assert subprocess.run([_need("promtool", "prometheus"), "check", "web-config", str(web)], capture_output=True).returncode == 0
    args = monitoring_files(m)
    users = yaml.safe_load(web.read_text())["basic_auth_users"]
    # Who logs in to prod (access lists) and has a hash; carol's hash is ignored, she has no login here.
    assert set(users) == {"alice", "bob", "prometheus"}
    assert bcrypt.checkpw(mr.scrape_password(HASHES).encode(), users["prometheus"].encode())
    assert f"--web.config.file={mr.WEB_CONFIG}" in args["/etc/default/prometheus"]
    assert f"--web.config.file={mr.ALERTMANAGER_WEB_CONFIG}" in args["/etc/default/prometheus-alertmanager"]
    assert "--web.external-url=https://monitor.hypha.coop/" in args["/etc/default/prometheus"]
    assert "--web.external-url=https://alerts.hypha.coop/" in args["/etc/default/prometheus-alertmanager"]
    config = yaml.safe_load(files[mr.PROMETHEUS_CONFIG].read_text())
    auth = {"username": "prometheus", "password_file": f"{tmp_path}{mr.SCRAPE_PASSWORD_FILE}"}
    assert config["alerting"]["alertmanagers"][0]["basic_auth"] == auth
    assert {j["job_name"]: j.get("basic_auth") for j in config["scrape_configs"]}["alertmanager"] == auth
    assert files[mr.SCRAPE_PASSWORD_FILE].read_text() == mr.scrape_password(HASHES)
    # Same secret in, same file out: an unchanged secret does not re-run the converge.
    assert mr.web_users(m, HASHES) == mr.web_users(m, HASHES)


def test_behind_the_login_prometheus_refuses_visitors_and_lets_members_and_itself_in(tmp_path):
    """The rendered web config on a real Prometheus, on loopback."""
    m = model("prod")
    files = write_tree(m, tmp_path)
    config = tmp_path / "minimal.yml"
    config.write_text("global: {scrape_interval: 1m}\n")
    port = _free_port()
    prom = subprocess.Popen(
        [_need("prometheus", "prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={files[mr.WEB_CONFIG]}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}/-/healthy"

    def status(user=None, password=None) -> int:
        req = urllib.request.Request(url)
        if user:
            req.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        _wait_http(url, 20, prom)
        assert status() == 401
        assert status("alice", "wrong") == 401
        assert status("carol", ALICE_PASSWORD) == 401  # a hash but no login on prod
        assert status("alice", ALICE_PASSWORD) == 200
        assert status("prometheus", mr.scrape_password(HASHES)) == 200
    finally:
        stop_process(prom)


# --- bad config: refused with its key path and the fix -------------------------------------------------


# --- program tier: secrets only as secrets, and only those the config needs ----------------------------


# --- the converge script checks each file with the daemon's own checker before it goes live -----------


def _converge_check_function(stack, host: str) -> str:
    """The `check` shell function of the host's real converge script."""
    script = converge_script(stack, host)
    start = script.index("check() { # checker staged-file")
    return script[start : script.index("\n}\n", start) + 3]


@pytest.mark.parametrize("stack", STACKS)
def test_the_converge_checks_every_monitoring_config_with_its_daemons_checker(tmp_path, stack):
    m = model(stack)
    check = _converge_check_function(m, "monitor1")
    values = late_values(m)
    checked = {}
    for i, f in enumerate(host_plan(m, "monitor1").files):
        if not f.path.startswith("/etc/prometheus/") or f.path in (mr.SCRAPE_PASSWORD_FILE, mr.PVE_CONFIG, mr.SMTP_PASSWORD_FILE):
            continue
        assert f.check, f"{f.path} goes live unchecked"
        good = tmp_path / f"f{i}"
        good.write_text(LATE_MARK.sub(lambda x: values[x.group(1)], f.content))
        bad = tmp_path / f"bad{i}"
        bad.write_text(good.read_text() + "\nnot_a_key_of_any_of_them: [\n")

        def run_check(path: Path) -> subprocess.CompletedProcess:
            sh = f'STAGE={tmp_path}\nfail() {{ echo "$*" >&2; exit 1; }}\n{check}\ncheck {f.check} {path}\n'
            return subprocess.run(["sh", "-c", sh], capture_output=True, text=True)

        result = run_check(good)
        assert result.returncode == 0, f"{f.path} ({f.check}): {result.stderr}"
        assert run_check(bad).returncode != 0, f"{f.path}: the {f.check} checker let a broken file through"
        checked[f.path] = f.check
    expected = {mr.PROMETHEUS_CONFIG: "promtool-config", mr.RULES_FILE: "promtool-rules", mr.ALERTMANAGER_CONFIG: "amtool",
                mr.BLACKBOX_CONFIG: "blackbox", mr.ALERTMANAGER_WEB_CONFIG: "promtool-web"}
    if m.monitoring.ui == "proxy":
        expected[mr.WEB_CONFIG] = "promtool-web"
    assert checked == expected


