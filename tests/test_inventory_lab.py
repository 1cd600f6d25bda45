"""Host tier, the inventory page (issue 16): a monitoring host converged from bare builds the page
from a lab proxy with real traffic, pve-exporter scraping a fake Proxmox API (fakepve) seeded with
the stack's node and VMs, and copies the status part to an off-site lab host that keeps it when the
monitoring host is gone. The page is read as members get it (over the VPN, behind the login) and
in headless Chromium, which also leaves a screenshot."""

from __future__ import annotations

import calendar
import email.utils
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

from model.load import build_stack
from lab.hosts import Lab, LabHost, stop_process
from lab.stack import boot_and_converge, ssh_keypair, web_lab_stack
from lab.subnets import subnets
from render import inventory
from render.roles import monitoring as mr
from tests.test_monitoring_lab import _wait  # bounded polling, failing with what did not happen
from tests.test_web_lab import _start_pebble
from tests.tools import lab_ready

pytestmark = pytest.mark.lab

PREFIX = "tinv"
FRONT, LAN, VPN = subnets(PREFIX).front, subnets(PREFIX).lan, subnets(PREFIX).vpn
ALICE_PASSWORD = "lab admin password"
PVE_TOKEN = "lab-pve-token-secret"
NODE = "kvm1"
GIB = 1024**3
# Requests the test sends through the proxy (bounded), and what each must count as.
PAGES_OK, PAGES_MISSING = 6, 3
KEYWORD_HITS = {"loomio": 4, "handbook": 2}
UNKNOWN_KEYWORDS = 2
NOTE = "Mail is slow today <we are on it>; the lists are fine."
ARTIFACTS = Path(os.environ.get("HYPHA_ARTIFACTS", "/tmp/hypha-artifacts"))
OFFSITE_DIR = "/srv/status"
OFFSITE_USER = "status"
OFFSITE_HTTP_PORT = 8000
TOOLS = {"pebble": "pebble", "mtail": "mtail", "chromium": "chromium", "rsync": "rsync"}

# Run inside a lab namespace: GET with an optional basic login; prints the status, the headers, the body.
CALL = (
    "import base64, json, sys, urllib.request, urllib.error\n"
    "url, login = sys.argv[1:3]\n"
    "req = urllib.request.Request(url)\n"
    "if login: req.add_header('Authorization', 'Basic ' + base64.b64encode(login.encode()).decode())\n"
    "try:\n    r = urllib.request.urlopen(req, timeout=10); code, head, body = r.status, dict(r.headers), r.read().decode()\n"
    "except urllib.error.HTTPError as e:\n    code, head, body = e.code, dict(e.headers), ''\n"
    "print(json.dumps({'status': code, 'headers': head, 'body': body}))\n"
)

# fakepve as a library: one node named as the stack's, its VMs, an API token, and the node's usage
# read from a file on every request, so the test can make the node run hot.
FAKEPVE = r'''
import asyncio, json, sys
from fakepve.server import FakePve
from fakepve.certs import make_cert

seed, usage_file, workdir = sys.argv[1:4]
seed = json.load(open(seed))
pve = FakePve(host="127.0.0.1", port=8006)
def stats(online):
    return json.load(open(usage_file)) if online else {}
FakePve._node_stats = staticmethod(stats)
# fakepve answers paths it does not model from the API schema, with made-up list items; the
# exporter's node collector reads the replication jobs' fields, so this one answers "none".
from fakepve.server import ok
_register = FakePve._register_stateful
def _register_with_replication(self, router, formats):
    _register(self, router, formats)
    async def no_jobs(request):
        return ok([])
    for p in formats:
        router.add_get(p + "/nodes/{node}/replication", no_jobs)
FakePve._register_stateful = _register_with_replication
pve.add_node(seed["node"])
for vm in seed["vms"]:
    pve.add_vm(vm["vmid"], vm["name"], node=seed["node"], status="running",
               config={"memory": vm["memory"], "cores": vm["cores"]})
pve.apitokens[seed["tokenid"]] = seed["secret"]
async def main():
    cert, key, _ = make_cert(workdir, hosts=("127.0.0.1",))
    await pve.start(cert, key)
    print("fakepve up", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''


@dataclass
class Inv:
    lab: Lab
    ls: object
    first: dict
    tmp: Path
    usage_file: Path

    @property
    def stack(self):
        return self.ls.stack

    def lan(self, host: str) -> str:
        return str(self.stack.hosts[host].lan_ip)

    def call(self, url: str, login: str = "", via: str = "gw") -> dict:
        return json.loads(self.lab.netns_exec(via, [sys.executable, "-c", CALL, url, login], timeout=30).stdout)

    def query(self, promql: str) -> list[dict]:
        url = f"http://{self.lan('mon')}:{mr.PROMETHEUS_PORT}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        body = json.loads(self.call(url)["body"])
        assert body["status"] == "success", body
        return body["data"]["result"]

    def build(self) -> float:
        """One run of the builder started now, as its timer starts it; seconds it took. A run the
        timer already started is waited out first: `systemctl start` would only join it, and its
        page would show the state before the test changed it."""
        unit = f"{inventory.UNIT}.service"
        _wait("the timer's run of the builder over", 120, lambda: self.lab.run(
            "mon", ["systemctl", "is-active", unit], check=False).stdout.strip() != "activating")
        started = time.monotonic()
        self.lab.run("mon", ["systemctl", "start", unit], timeout=120)
        return time.monotonic() - started

    def page(self, name: str = "index.html") -> str:
        got = self.call(f"http://{self.lan('mon')}:{inventory.INVENTORY_PORT}/{name}", f"alice:{ALICE_PASSWORD}")
        assert got["status"] == 200, got
        return got["body"]


def _row(page: str, row_id: str) -> str:
    m = re.search(rf'<tr id="{re.escape(row_id)}"[^>]*>(.*?)</tr>', page, re.S)
    assert m, f"no row {row_id} in the page"
    return m.group(1)


def _lab_stack(offsite_key: str):
    """The web lab's proxy and upstream (no name server: pebble is told every challenge is valid),
    plus a monitoring host, an off-site host outside the stack, and the Proxmox API on the
    monitoring host's loopback (fakepve)."""
    base = web_lab_stack(FRONT, LAN, VPN)
    raw = base.raw
    n = list(LAN.hosts())
    node = next(iter(raw["proxmox"]["nodes"]))
    assert node == NODE
    first_id = raw["site"]["vm_ids"]["first"]
    del raw["hosts"]["dns"]
    raw.pop("dns", None)
    raw["services"].pop("loomio")
    raw["hosts"]["mon"] = {"vm_id": first_id + 8, "node": node, "lan_ip": str(n[5]), "roles": ["monitoring"]}
    raw["proxmox"].update(endpoint="https://127.0.0.1:8006/", insecure=True)
    raw["monitoring"] = {
        "scrape_interval": "2s",
        "ui": "vpn",
        "group_wait": "1s",
        # The node memory alert's own wait (5m in the rules) made short, the way a stack tunes one,
        # so the lab sees it fire, not only pend.
        "alert_waits": {"MemoryPressure": "10s"},
        "verify_certificates": False,  # pebble's certificates: no system trusts them
        "matrix": {"url": "http://127.0.0.1:9/matrix-webhook"},
        "pve_exporter": {"user": "prometheus@pve", "token_name": "monitoring"},
        "status_offsite": {"host": str(n[6]), "user": OFFSITE_USER, "path": OFFSITE_DIR, "host_key": offsite_key,
                           "url": f"http://{n[6]}:{OFFSITE_HTTP_PORT}/"},
    }
    base.stack = build_stack(raw, "prod")
    base.lab_hosts = [h for h in base.lab_hosts if h.name != "dns"] + [LabHost("mon", str(n[5])), LabHost("off", str(n[6]))]
    return base


def _pve_exporter_release(tmp: Path) -> Path:
    """The pinned pve-exporter, installed from PyPI on this machine once (a lab host has no network
    to PyPI); the monitoring host gets it where its converge looks, so the install step is skipped."""
    from model.monitoring import PveExporter

    version = PveExporter.model_fields["version"].default
    cache = Path(f"/var/tmp/hypha-lab-pve-exporter-{version}")
    if not (cache / "pve_exporter").is_dir():
        target = tmp / "pvex"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target",
                        str(target), f"prometheus-pve-exporter=={version}"], check=True, timeout=300)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(target, cache, symlinks=True)
    return cache


def _install_pve_exporter(lab: Lab, tmp: Path) -> None:
    from model.monitoring import PveExporter

    venv = lab.root_dir("mon") / mr.PVE_VENV.lstrip("/")
    shutil.copytree(_pve_exporter_release(tmp), venv / "lib", symlinks=True)
    (venv / "bin").mkdir(parents=True)
    launcher = venv / "bin" / "pve_exporter"
    launcher.write_text(f"#!/usr/bin/python3\nimport sys\nsys.path.insert(0, {mr.PVE_VENV + '/lib'!r})\n"
                        "from pve_exporter.cli import main\nsys.exit(main())\n")
    launcher.chmod(0o755)
    (venv / "hypha-release").write_text(f"{PveExporter.model_fields['version'].default}\n")


def _start_fakepve(lab: Lab, ls, tmp: Path, usage: Path) -> subprocess.Popen:
    stack = ls.stack
    node = stack.proxmox.nodes[NODE]
    _set_usage(usage, node.memory_mb * 1024 * 1024, 0.40)
    seed = tmp / "pve-seed.json"
    pve = stack.monitoring.pve_exporter
    seed.write_text(json.dumps({
        "node": NODE, "tokenid": f"{pve.user}!{pve.token_name}", "secret": PVE_TOKEN,
        "vms": [{"vmid": h.vm_id, "name": name, "memory": h.memory_mb, "cores": h.cores} for name, h in sorted(stack.hosts.items())],
    }))
    (tmp / "fakepve").mkdir()
    script = tmp / "fakepve-launch.py"
    script.write_text(FAKEPVE)
    log = open(tmp / "fakepve.log", "wb")
    proc = subprocess.Popen(["ip", "netns", "exec", lab.netns("mon"), sys.executable, str(script), str(seed), str(usage), str(tmp / "fakepve")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    _wait("fakepve listening", 30, lambda: "fakepve up" in (tmp / "fakepve.log").read_text())
    return proc


def _set_usage(usage: Path, maxmem: int, ratio: float) -> None:
    usage.write_text(json.dumps({"cpu": 0.2, "maxcpu": 12, "mem": int(maxmem * ratio), "maxmem": maxmem,
                                 "disk": 4 * GIB, "maxdisk": 64 * GIB, "uptime": 3600}))


def _prepare_offsite(lab: Lab, public_key: str) -> None:
    """The off-site server: a login for the pushes (the stack output's key), a directory a web server serves."""
    lab.run("off", ["useradd", "-m", "-s", "/bin/sh", OFFSITE_USER])
    lab.run("off", ["install", "-d", "-o", OFFSITE_USER, "-g", OFFSITE_USER, "-m", "0755", OFFSITE_DIR])
    lab.run("off", ["install", "-d", "-o", OFFSITE_USER, "-g", OFFSITE_USER, "-m", "0700", f"/home/{OFFSITE_USER}/.ssh"])
    lab.run("off", ["sh", "-c", f"cat > /home/{OFFSITE_USER}/.ssh/authorized_keys && chown {OFFSITE_USER}: /home/{OFFSITE_USER}/.ssh/authorized_keys"],
            input=public_key + "\n")
    lab.run("off", ["systemd-run", "--unit=status-web", "python3", "-m", "http.server", str(OFFSITE_HTTP_PORT), "--directory", OFFSITE_DIR])


@pytest.fixture(scope="module")
def inv(tmp_path_factory):
    lab_ready(TOOLS, "inventory")
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("inventory")
    # The addresses are known before the lab is up; the off-site host key only after.
    ls = _lab_stack("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKxllS0NufzY37um9AV0yQirVjSb6pMW5o5suJ110GP/")
    with Lab(PREFIX, ls.lab_hosts, front=str(FRONT), lan=str(LAN), lan_gateway=ls.lan_gateway) as lab:
        host_key = (lab.root_dir("off") / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        ls = _lab_stack(" ".join(host_key[:2]))
        hashes = json.dumps({"alice": bcrypt.hashpw(ALICE_PASSWORD.encode(), bcrypt.gensalt(4)).decode()})
        push_key = ssh_keypair("status@lab")
        ls.late.update(mr.login_late_values(ls.stack, hashes))
        ls.late[mr.LATE_PVE_TOKEN] = mr.yaml_scalar(PVE_TOKEN)
        ls.late[inventory.LATE_OFFSITE_KEY] = push_key.private_openssh
        usage = tmp / "pve-usage.json"
        # No name server in this lab: the proxy's names are not what is shown here, the page is.
        pebble, _ = _start_pebble(ls, tmp, dns=False)
        fake = None
        try:
            fake = _start_fakepve(lab, ls, tmp, usage)
            _install_pve_exporter(lab, tmp)
            _prepare_offsite(lab, push_key.public_line)
            lab.run("app", ["sh", "-c", "mkdir -p /srv/www && echo '<h1>hypha</h1>' > /srv/www/index.html"])
            lab.run("app", ["systemd-run", "--unit=fake-www", "python3", "-m", "http.server", "8080", "--directory", "/srv/www"])
            first = boot_and_converge(lab, ls)
            for h, r in first.items():
                assert r.ok, f"{h}: {r.stdout}{r.stderr}"
            print(f"inventory lab up and converged in {time.monotonic() - started:.1f} s")
            yield Inv(lab, ls, first, tmp, usage)
        finally:
            if fake is not None:
                stop_process(fake)
            stop_process(pebble)
            print(f"inventory lab wall time (fixture to teardown start): {time.monotonic() - started:.1f} s")


# --- the page from real traffic ----------------------------------------------------------------------


def _https(inv: Inv, name: str, path: str) -> int:
    """A GET through the proxy's front address from the root namespace (the internet), SNI `name`."""
    import http.client
    import socket
    import ssl

    ctx = ssl.create_default_context(cadata=inv.ls.acme_ca_pem)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # pebble's leaf chain is not what is tested here
    raw = socket.create_connection((inv.ls.front_ip["web1"], 443), timeout=10)
    conn = http.client.HTTPConnection(name, 443, timeout=10)
    conn.sock = ctx.wrap_socket(raw, server_hostname=name)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_the_monitoring_host_converges_from_bare_with_the_page_builder_on_a_timer(inv):
    log = inv.first["mon"].stdout
    for path in (inventory.TOOL, inventory.CONFIG, inventory.TIMER_FILE, inventory.SITE, inventory.OFFSITE_KNOWN_HOSTS):
        assert f"changed {path}" in log
    assert inv.lab.run("mon", ["systemctl", "is-active", f"{inventory.UNIT}.timer"], check=False).stdout.strip() == "active"
    assert inv.lab.run("web1", ["systemctl", "is-active", "mtail"], check=False).stdout.strip() == "active"


def test_the_page_asks_for_the_members_login(inv):
    url = f"http://{inv.lan('mon')}:{inventory.INVENTORY_PORT}/"
    assert inv.call(url)["status"] == 401
    assert inv.call(url, "alice:wrong")["status"] == 401


def test_counts_on_the_page_match_the_requests_sent(inv):
    assert all(_https(inv, "hypha.coop", "/") == 200 for _ in range(PAGES_OK))
    assert all(_https(inv, "hypha.coop", f"/missing-{i}") == 404 for i in range(PAGES_MISSING))
    for keyword, n in KEYWORD_HITS.items():
        assert all(_https(inv, "link.hypha.coop", f"/{keyword}") == 302 for _ in range(n))
    assert all(_https(inv, "link.hypha.coop", f"/no-such-link-{i}") == 404 for i in range(UNKNOWN_KEYWORDS))
    # What Prometheus has, before the page is built from it.
    sent = sum(KEYWORD_HITS.values())
    _wait("the shortener's redirects in Prometheus", 60, lambda: [
        r for r in inv.query('sum(hypha_shortlink_hits_total)') if float(r["value"][1]) == sent])
    took = inv.build()
    print(f"the page builder ran in {took:.1f} s")
    page = inv.page()
    # Its own probes go through the proxy too (a 2xx on hypha.coop, a 404 on the shortener every
    # scrape), so the classes only the test's requests make are compared exactly.
    assert f'data-class="4xx">{PAGES_MISSING}<' in _row(page, "use-hypha.coop")
    link = _row(page, "use-link.hypha.coop")
    assert f'data-class="3xx">{sent}<' in link
    top = re.search(r'<table id="top-keywords">(.*?)</table>', page, re.S).group(1)
    for keyword, n in KEYWORD_HITS.items():
        assert f'data-keyword="{keyword}">{n}<' in top
    unused = re.search(r'<p id="unused-keywords">(.*?)</p>', page, re.S).group(1)
    assert "loomio" not in unused and "<code>agm</code>" in unused
    assert not re.search(r"no-such-link", page)
    (inv.tmp / "index.html").write_text(page)


def _probe_history(inv: Inv, seconds: int = 120) -> dict[str, list[str]]:
    """Each service's probe result every 10 s over the last `seconds`, as Prometheus holds it."""
    now = time.time()
    body = inv.call(f"http://{inv.lan('mon')}:{mr.PROMETHEUS_PORT}/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": 'min by (service) (probe_success{job="probe_http"})', "start": now - seconds, "end": now, "step": 10}))["body"]
    return {r["metric"]["service"]: [v for _, v in r["values"]] for r in json.loads(body)["data"]["result"]}


def test_a_stopped_service_shows_as_down(inv):
    # Up for a while first, as a service is before it fails: the page says since when it is down.
    _wait("30 s of www up in Prometheus", 90, lambda: _probe_history(inv).get("www", [])[-3:] == ["1", "1", "1"])
    inv.lab.run("app", ["systemctl", "stop", "fake-www"])
    try:
        _wait("www's probe failing", 60, lambda: [r for r in inv.query('probe_success{service="www"}') if r["value"][1] == "0"])
        inv.build()
        page = inv.page()
        www = _row(page, "svc-www")
        assert 'data-state="down"' in www and "down since " in www, (re.sub(r"<[^>]+>", " ", www), _probe_history(inv))
        assert 'data-state="up"' in _row(page, "svc-link")
        status = inv.page("status.html")
        assert '<p class="down" id="summary">Down: www</p>' in status
    finally:
        inv.lab.run("app", ["systemctl", "start", "fake-www"], check=False)


def test_the_node_ram_from_pve_exporter_is_on_the_page_and_its_alert_goes_off_when_it_runs_hot(inv):
    maxmem = inv.stack.proxmox.nodes[NODE].memory_mb * 1024 * 1024
    node = f'pve_memory_usage_bytes{{id="node/{NODE}"}}'
    def scraped():
        if inv.query(node):
            return True
        targets = json.loads(inv.call(f"http://{inv.lan('mon')}:{mr.PROMETHEUS_PORT}/api/v1/targets")["body"])
        pve = [(t["health"], t["lastError"]) for t in targets["data"]["activeTargets"] if t["labels"]["job"] == "pve"]
        journal = inv.lab.run("mon", ["journalctl", "-u", mr.PVE_UNIT, "--no-pager", "-n", "15"], check=False).stdout
        raise AssertionError(f"pve target {pve}; exporter journal:\n{journal}")

    _wait("the node's RAM scraped", 60, scraped)
    inv.build()
    row = _row(inv.page(), f"node-{NODE}-memory")
    assert "25.6 GiB of 64.0 GiB (40%)" in row, row
    _set_usage(inv.usage_file, maxmem, 0.95)
    _wait("the node's RAM at 95%", 60, lambda: [r for r in inv.query(node) if float(r["value"][1]) > 0.9 * maxmem])
    # MemoryPressure waits 10 s here (monitoring.alert_waits above); with the rules' 5 minutes the
    # promtool tests show it firing.
    url = f"http://{inv.lan('mon')}:{mr.PROMETHEUS_PORT}/api/v1/alerts"

    def memory_alert():
        alerts = json.loads(inv.call(url)["body"])["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "MemoryPressure" and a["labels"].get("id") == f"node/{NODE}"]

    (alert,) = _wait("MemoryPressure firing for the node", 90,
                     lambda: [a for a in memory_alert() if a["state"] == "firing"])
    assert alert["labels"]["severity"] == "critical" and "under 10% of its memory" in alert["annotations"]["summary"], alert
    inv.build()
    assert "60.8 GiB of 64.0 GiB (95%)" in _row(inv.page(), f"node-{NODE}-memory")
    _set_usage(inv.usage_file, maxmem, 0.40)


def test_the_page_in_headless_chromium_shows_the_facts_and_leaves_a_screenshot(inv):
    inv.build()
    page_file = inv.tmp / "page" / "index.html"
    page_file.parent.mkdir(exist_ok=True)
    page_file.write_text(inv.page())
    base = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={inv.tmp / 'chromium'}"]
    dom = subprocess.run([*base, "--dump-dom", page_file.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The DOM Chromium built: every service row, the counts, the charts as SVG, and nothing scripted.
    for name in inv.stack.services:
        assert f'id="svc-{name}"' in dom.stdout
    assert f'data-keyword="loomio">{KEYWORD_HITS["loomio"]}<' in dom.stdout
    # A young lab has one day of history: its charts are single points (circles), drawn all the same.
    assert '<svg class="spark"' in dom.stdout and "<script" not in dom.stdout
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = ARTIFACTS / "inventory-page.png"
    shot = subprocess.run([*base, f"--screenshot={png}", "--window-size=1280,1800", page_file.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and png.stat().st_size > 10_000, shot.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot of the inventory page: {png}")


def test_the_status_copy_off_site_keeps_the_note_and_its_age_when_the_monitoring_host_is_gone(inv):
    inv.lab.run("mon", ["sh", "-c", f"cat > {inventory.NOTE_FILE}"], input=NOTE + "\n")
    inv.build()
    built_at = time.time()
    off = f"http://{inv.stack.monitoring.status_offsite.host}:{OFFSITE_HTTP_PORT}/"
    before = inv.call(off)
    assert before["status"] == 200 and "Mail is slow today &lt;we are on it&gt;" in before["body"]
    stamp = re.search(r'<meta name="generated" content="([^"]+)">', before["body"]).group(1)
    # The monitoring host goes away: powered off, as when its VM or the server is down.
    inv.lab.run("mon", ["systemctl", "poweroff", "--no-block"], check=False)
    _wait("the monitoring host gone", 60, lambda: inv.lab.netns_exec(
        "gw", [sys.executable, "-c", CALL, f"http://{inv.lan('mon')}:{inventory.INVENTORY_PORT}/", ""], check=False, timeout=15
    ).returncode != 0)
    after = inv.call(off)
    assert after["status"] == 200 and after["body"] == before["body"]
    assert "Mail is slow today &lt;we are on it&gt;" in after["body"]
    assert "if this is more than 15 minutes old, the monitoring host is down" in after["body"]
    # How old it is: the stamp in the page, and the file's time the web server sends as Last-Modified.
    generated = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(generated - built_at) < 60
    modified = email.utils.parsedate_to_datetime(after["headers"]["Last-Modified"]).timestamp()
    assert abs(modified - generated) < 2
