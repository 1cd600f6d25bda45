"""The inventory page builder (templates/monitoring/hypha-inventory.py) run with Debian's python3
against a fake Prometheus on loopback answering canned API replies: the facts of the page, its
charts and its safety (no script, nothing loaded from elsewhere, every value escaped), the status
part with its time stamp and the admins' note, and the config it reads made from the catalog."""

from __future__ import annotations

import copy
import http.server
import json
import re
import subprocess
import threading
import time
import urllib.parse
from base64 import b64encode
from pathlib import Path

import pytest

from model import capacity
from model.errors import ConfigError
from model.load import build_stack
from model.derive_monitoring import INVENTORY_PORT, monitoring_host
from render import inventory
from render.roles import host_plan
from tests.program_runs import model, raw

pytestmark = pytest.mark.files

TOOL = Path(__file__).resolve().parent.parent / "templates" / "monitoring" / "hypha-inventory.py"
NOW = 1_780_000_000.4567  # a fixed "now" the canned answers are relative to (not on a millisecond)
DAY = 86400
GIB = 1024**3


def _vector(rows):
    return {"resultType": "vector", "result": [{"metric": m, "value": [NOW, str(v)]} for m, v in rows]}


def _matrix(rows):
    # Prometheus answers with millisecond timestamps, whatever precision it was asked with.
    return {"resultType": "matrix", "result": [{"metric": m, "values": [[round(t, 3), str(v)] for t, v in pts]} for m, pts in rows]}


def _days(values):
    """30 daily points ending at the query's end (the builder asks for end=now, step 1d)."""
    return [(NOW - (len(values) - 1 - i) * DAY, v) for i, v in enumerate(values)]


class FakePrometheus:
    """Answers the builder's PromQL from a table of (pattern, answer) pairs, the first match wins."""

    def __init__(self, password=None):
        self.asked: list[str] = []
        self.auth: list[str] = []
        self.password = password
        went_down = NOW - 3 * 3600
        minutes = [NOW - 86400 + 60 * i for i in range(1441)]
        self.instant = [
            (r"^avg by \(service\) \(avg_over_time\(probe_success", [({"service": "loomio"}, 0.95), ({"service": "www"}, 1)]),
            (r"^min by \(service\) \(probe_success", [({"service": "loomio"}, 0), ({"service": "www"}, 1), ({"service": "link"}, 1)]),
            (r"probe_ssl_earliest_cert_expiry", [({"service": "www"}, NOW + 40 * DAY), ({"service": "loomio"}, NOW + 5 * DAY)]),
            (r"hypha_backup_last_success", [({"repository": "loomio"}, NOW - 2 * 3600)]),
            (r"hypha_restore_drill_last_success", [({"repository": "loomio"}, NOW - 5 * 3600)]),
            (r"hypha_restore_drill_ok", [({"repository": "loomio"}, 0)]),
            (r"^sum by \(vhost, code_class\)", [
                ({"vhost": "hypha.coop", "code_class": "2xx"}, 120), ({"vhost": "hypha.coop", "code_class": "4xx"}, 7),
                ({"vhost": "link.hypha.coop", "code_class": "3xx"}, 42), ({"vhost": "<b>evil</b>", "code_class": "2xx"}, 1)]),
            (r"^sum by \(keyword\)", [({"keyword": "loomio"}, 30), ({"keyword": "handbook"}, 12), ({"keyword": "vote"}, 0)]),
            (r'^pve_memory_usage_bytes\{id="node/kvm1"\}', [({"id": "node/kvm1"}, 40 * GIB)]),
            (r'^pve_memory_size_bytes\{id="node/kvm1"\}', [({"id": "node/kvm1"}, 64 * GIB)]),
            (r'^pve_cpu_usage_ratio\{id="node/kvm1"\}', [({"id": "node/kvm1"}, 0.25)]),
            (r'^pve_cpu_usage_limit\{id="node/kvm1"\}', [({"id": "node/kvm1"}, 12)]),
            (r'^pve_disk_usage_bytes\{id="storage/kvm1/hdd"\}', [({"id": "storage/kvm1/hdd"}, 900 * GIB)]),
            (r'^pve_disk_size_bytes\{id="storage/kvm1/hdd"\}', [({"id": "storage/kvm1/hdd"}, 1800 * GIB)]),
            (r"^min\(hypha_borg_filesystem_free_bytes\)", [({}, 100 * GIB)]),
            # Losing 10 GiB a day: full in 10 days.
            (r"^min\(deriv\(hypha_borg_filesystem_free_bytes", [({}, -10 * GIB / DAY)]),
        ]
        self.ranges = [
            (r"^avg by \(service\) \(avg_over_time\(probe_success\{[^}]*\}\[1d\]", [
                ({"service": "loomio"}, _days([1] * 27 + [0.9, 0.8, 0.4])), ({"service": "www"}, _days([1] * 30))]),
            (r"^min by \(service\) \(probe_success", [
                ({"service": "loomio"}, [(t, 1 if t < went_down else 0) for t in minutes]),
                ({"service": "www"}, [(t, 1) for t in minutes])]),
            (r"^sum by \(vhost\)", [({"vhost": "hypha.coop"}, _days(list(range(100, 130))))]),
            (r"pve_memory_usage_bytes", [({"id": "node/kvm1"}, _days([30 * GIB + i * GIB / 3 for i in range(30)]))]),
            (r"hypha_borg_filesystem_free_bytes", [({}, _days([400 * GIB - i * 10 * GIB for i in range(30)]))]),
        ]

    def answer(self, path, params):
        q = params["query"]
        self.asked.append(q)
        table, shape = (self.ranges, _matrix) if path.endswith("query_range") else (self.instant, _vector)
        for pattern, rows in table:
            if re.search(pattern, q):
                if shape is _matrix:  # only the points inside the range asked for, as Prometheus answers
                    # (the builder sends times to the millisecond, as Prometheus reads them)
                    lo, hi = float(params["start"]) - 0.001, float(params["end"]) + 0.001
                    rows = [(m, [(t, v) for t, v in pts if lo <= t <= hi]) for m, pts in rows]
                return shape(rows)
        return shape([])

    def __enter__(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                fake.auth.append(self.headers.get("Authorization") or "")
                if fake.password and self.headers.get("Authorization") != "Basic " + b64encode(f"prometheus:{fake.password}".encode()).decode():
                    self.send_response(401)
                    self.end_headers()
                    return
                params = dict(urllib.parse.parse_qsl(url.query))
                body = json.dumps({"status": "success", "data": fake.answer(url.path, params)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _host_config(stack) -> dict:
    """The builder's config as the monitoring host gets it (its managed file)."""
    (f,) = [f for f in host_plan(stack, monitoring_host(stack)).files if f.path == inventory.CONFIG]
    return json.loads(f.content)


def _config(tmp_path: Path, prom_url: str, stack=None, **changes) -> Path:
    stack = stack or model("prod")
    cfg = _host_config(stack)
    cfg["prometheus"] = {"url": prom_url, "user": None, "password_file": None}
    cfg["output"] = str(tmp_path / "www")
    cfg["note_file"] = str(tmp_path / "note.txt")
    # Never toward the committed off-site server; a test that pushes names its own target.
    cfg["offsite"] = None
    cfg.update(changes)
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(cfg))
    return path


def _build(config: Path, *extra: str, now: float = NOW) -> subprocess.CompletedProcess:
    """Debian's python3 in isolated mode (no site packages, no project on the path): stdlib only.
    Its clock is pinned to NOW through a wrapper, so the canned answers line up."""
    wrapper = f"import time, runpy, sys; time.time = lambda: {now!r}; sys.argv = [{str(TOOL)!r}, *sys.argv[1:]]; runpy.run_path({str(TOOL)!r}, run_name='__main__')"
    return subprocess.run(["/usr/bin/python3", "-I", "-c", wrapper, "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def built_in(tmp_path_factory):
    """One build of the pages for the tests that only read them (a build is ~0.6 s of Python start-ups):
    the pages, the queries Prometheus was asked, and the directory they were built in."""
    d = tmp_path_factory.mktemp("inventory")
    (d / "note.txt").write_text("Loomio is down for an upgrade <until 18:00>.\n")
    with FakePrometheus() as prom:
        out = _build(_config(d, prom.url))
        asked = list(prom.asked)
    assert out.returncode == 0, out.stderr
    page = (d / "www" / "index.html").read_text()
    status = (d / "www" / "status.html").read_text()
    return (page, status, asked), d


@pytest.fixture
def built(built_in):
    return built_in[0]


def _row(page: str, row_id: str) -> str:
    m = re.search(rf'<tr id="{re.escape(row_id)}"[^>]*>(.*?)</tr>', page, re.S)
    assert m, f"no row {row_id}"
    return m.group(1)


def _text(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<title>.*?</title>|<[^>]+>", " ", fragment)).strip()


def test_every_catalog_service_is_listed_with_its_urls_host_and_reach(built):
    page, _, _ = built
    stack = model("prod")
    for name, svc in stack.services.items():
        row = _row(page, f"svc-{name}")
        assert f">{svc.host}<" in row
        for d in svc.domains:
            assert f"https://{d}/" in row
    assert "members (login)" in _row(page, "svc-prometheus") and "members (login)" in _row(page, "svc-inventory")
    assert ">public<" in _row(page, "svc-www")


def test_a_failing_service_shows_down_since_it_went_down_and_its_uptime(built):
    page, _, _ = built
    loomio = _row(page, "svc-loomio")
    went_down = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(NOW - 3 * 3600))
    assert 'data-state="down"' in loomio and f"since {went_down}" in loomio
    assert "95.00%" in loomio
    www = _row(page, "svc-www")
    assert 'data-state="up"' in www and "for over 24 h" in www and "100.00%" in www


def test_certificates_backups_and_drills_show_their_dates_and_results(built):
    page, _, _ = built
    loomio = _text(_row(page, "svc-loomio"))
    assert "(5 days)" in loomio  # under 14 days: marked
    assert 'class="warn">' in _row(page, "svc-loomio")
    assert "(2 h ago)" in loomio and "last one FAILED" in loomio
    assert "(40 days)" in _text(_row(page, "svc-www"))
    # bw1 never reported a backup; the link shortener keeps no data.
    assert "never" in _text(_row(page, "svc-www"))
    assert "no data kept" in _text(_row(page, "svc-link"))


def test_requests_per_vhost_and_status_class_and_keywords_used_and_unused(built):
    page, _, _ = built
    row = _row(page, "use-hypha.coop")
    assert "data-total>127<" in row and 'data-class="2xx">120<' in row and 'data-class="4xx">7<' in row
    assert 'data-class="3xx">42<' in _row(page, "use-link.hypha.coop")
    top = re.search(r'<table id="top-keywords">(.*?)</table>', page, re.S).group(1)
    assert top.index("loomio") < top.index("handbook") and 'data-keyword="loomio">30<' in top
    unused = re.search(r'<p id="unused-keywords">(.*?)</p>', page, re.S).group(1)
    keywords = _host_config(model("prod"))["shortlinks"]["keywords"]
    assert re.findall(r"<code>(.*?)</code>", unused) == [k for k in keywords if k not in ("loomio", "handbook")]
    assert "vote" in unused  # a keyword with 0 hits is unused too


def test_capacity_shows_the_plan_figures_against_what_proxmox_reports(built):
    page, _, _ = built
    stack = model("prod")
    u = capacity.usage(stack.proxmox, stack.hosts)["kvm1"]
    mem = _text(_row(page, "node-kvm1-memory"))
    assert f"{u.memory_mb.used:,} MiB of {u.memory_mb.offered:,} MiB" in mem
    assert "40.0 GiB of 64.0 GiB (62%)" in mem
    assert f"{u.vcpus.used} of {u.vcpus.offered} vCPUs" in _text(_row(page, "node-kvm1-cpu")) and "25% of 12 threads" in page
    hdd = _text(_row(page, "node-kvm1-storage-hdd"))
    assert f"{u.storage['hdd'].used:,} GiB of {u.storage['hdd'].offered:,} GiB" in hdd and "900.0 GiB of 1.8 TiB used" in hdd
    assert "no data" in _text(_row(page, "node-kvm1-storage-local-nvme"))
    full = re.search(r'<p id="backup-space">(.*?)</p>', page, re.S).group(1)
    assert "100.0 GiB free" in full and "full in 10 days at the 7-day trend" in full and 'class="warn"' in full


def test_sparklines_are_inline_svg_drawn_from_30_daily_points(built):
    page, _, asked = built
    svgs = re.findall(r'<svg class="spark"[^>]*>(.*?)</svg>', page, re.S)
    assert len(svgs) >= 5
    loomio = re.search(r"<svg[^>]*><title>loomio: daily uptime, 30 days</title><polyline points=\"([^\"]+)\"", page).group(1)
    points = [tuple(map(float, p.split(","))) for p in loomio.split()]
    assert len(points) == 30 and points[-1][1] > points[0][1]  # the last day's 40% is lower on the chart (higher y)


def test_the_page_runs_no_script_and_loads_nothing_from_elsewhere(built):
    page, status, _ = built
    for doc in (page, status):
        assert "<script" not in doc.lower() and "javascript:" not in doc.lower()
        assert not re.search(r"<(link|img|iframe|object|embed)\b", doc, re.I)
        assert not re.search(r"@import|url\(", doc)
    # A hostile label value from Prometheus is text, not markup.
    assert "<b>evil</b>" not in page


def test_the_status_page_has_the_state_the_time_it_was_made_and_the_note_escaped(built):
    _, status, _ = built
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW))
    assert f'<meta name="generated" content="{stamp}">' in status
    assert f'<time datetime="{stamp}">' in status and "more than 15 minutes old, the monitoring host is down" in status
    assert time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(NOW)) in status
    assert "Loomio is down for an upgrade &lt;until 18:00&gt;." in status
    assert '<p class="down" id="summary">Down: loomio</p>' in status
    assert 'data-state="down"' in _row(status, "status-loomio")


def test_the_pages_keep_the_time_they_were_made_as_their_file_time(built_in):
    assert int((built_in[1] / "www" / "status.html").stat().st_mtime) == int(NOW)


def test_the_builder_logs_in_to_prometheus_when_the_ui_needs_one(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    with FakePrometheus(password="s3cret") as prom:
        cfg = _config(tmp_path, prom.url)
        data = json.loads(cfg.read_text())
        data["prometheus"].update(user="prometheus", password_file=str(tmp_path / "pw"))
        cfg.write_text(json.dumps(data))
        out = _build(cfg)
    assert out.returncode == 0, out.stderr
    assert set(prom.auth) == {"Basic " + b64encode(b"prometheus:s3cret").decode()}


def test_prometheus_unreachable_fails_the_run_in_one_line_and_writes_nothing(tmp_path):
    out = _build(_config(tmp_path, "http://127.0.0.1:9"))
    assert out.returncode == 1 and out.stderr.strip().startswith("hypha-inventory FAILED:")
    assert "Traceback" not in out.stderr and not (tmp_path / "www").exists()


def test_a_failed_off_site_copy_fails_the_run_after_the_pages_are_written(tmp_path):
    offsite = {"host": "127.0.0.1", "port": 9, "user": "status", "path": "/srv/status", "key": str(tmp_path / "key"),
               "known_hosts": str(tmp_path / "known_hosts"), "url": None}
    with FakePrometheus() as prom:
        out = _build(_config(tmp_path, prom.url, offsite=offsite))
        assert out.returncode == 1 and "hypha-inventory FAILED: rsync to 127.0.0.1 failed" in out.stderr
        assert (tmp_path / "www" / "status.html").exists()
        # --no-push: the pages alone.
        assert _build(_config(tmp_path, prom.url, offsite=offsite), "--no-push").returncode == 0


def test_a_retired_service_is_listed_as_retired_with_its_date(tmp_path):
    with FakePrometheus() as prom:
        cfg = _config(tmp_path, prom.url)
        data = json.loads(cfg.read_text())
        for s in data["services"]:
            if s["name"] == "lists":
                s["retired"] = {"date": "2026-11-30", "redirect": "https://hypha.coop/lists-moved"}
            if s["name"] == "loomio":
                s["retired"] = {"date": "2026-10-01", "redirect": None}
        cfg.write_text(json.dumps(data))
        assert _build(cfg).returncode == 0
    row = _row((tmp_path / "www" / "index.html").read_text(), "svc-lists")
    assert "retired on 2026-11-30" in _text(row) and 'href="https://hypha.coop/lists-moved"' in row
    assert "retired on 2026-10-01, its names answer 410 Gone" in _text(_row((tmp_path / "www" / "index.html").read_text(), "svc-loomio"))


def test_the_config_holds_the_make_plan_figures_and_the_shortlinks_keywords():
    stack = model("prod")
    cfg = _host_config(stack)
    u = capacity.usage(stack.proxmox, stack.hosts)
    assert cfg["nodes"] == [{
        "name": "kvm1",
        "planned": {"vcpus": [u["kvm1"].vcpus.used, u["kvm1"].vcpus.offered],
                    "memory_mb": [u["kvm1"].memory_mb.used, u["kvm1"].memory_mb.offered],
                    "storage": {ds: [s.used, s.offered] for ds, s in sorted(u["kvm1"].storage.items())}},
        "storage": sorted(u["kvm1"].storage),
    }]
    assert cfg["shortlinks"]["vhost"] == "link.hypha.coop" and "loomio" in cfg["shortlinks"]["keywords"]
    # The proxy's canonical names, as nginx logs $server_name: hypha.coop, not www.hypha.coop.
    assert "hypha.coop" in cfg["vhosts"] and "www.hypha.coop" not in cfg["vhosts"]
    assert cfg["prometheus"]["user"] == "prometheus"  # prod's Prometheus asks for a login (ui: proxy)
    assert _host_config(model("staging"))["prometheus"]["user"] is None


def test_the_page_is_behind_the_members_login_on_the_monitoring_host():
    for name in ("prod", "staging"):
        stack = model(name)
        plan = host_plan(stack, monitoring_host(stack))
        files = {f.path: f for f in plan.files}
        site = files[inventory.SITE].content
        assert f"listen {stack.hosts[monitoring_host(stack)].lan_ip}:{INVENTORY_PORT};" in site
        assert "auth_basic_user_file /etc/nginx/hypha-alertmanager.users;" in site
        assert f"{inventory.UNIT}.timer" in plan.units
        assert files[inventory.TOOL].check == "python" and files[inventory.CONFIG].check == "json"


def test_staging_members_reach_the_page_over_the_vpn_and_prod_members_through_the_proxy():
    from model import derive

    staging = model("staging")
    rules = [r for r in derive.inbound_rules(staging, monitoring_host(staging)) if r.port == INVENTORY_PORT]
    assert [r.source for r in rules] == [f"{derive.gateway(staging).lan_ip}/32"]
    prod = model("prod")
    proxy = derive.hosts_with_role(prod, "reverse_proxy")[0]
    rules = [r for r in derive.inbound_rules(prod, monitoring_host(prod)) if r.port == INVENTORY_PORT]
    assert [r.source for r in rules] == [f"{prod.hosts[proxy].lan_ip}/32"]
    assert inventory.page_url(prod, prod.monitoring) == "https://inventory.hypha.coop/"


def test_ui_proxy_without_a_service_publishing_the_page_is_refused_naming_the_fix():
    cfg = raw("prod")
    del cfg["services"]["inventory"]
    with pytest.raises(ConfigError) as caught:
        build_stack(cfg, "prod")
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem.startswith("monitoring.ui: is `proxy` but no public service publishes the inventory UI")
    assert f"port: {INVENTORY_PORT}" in problem


def test_an_offsite_status_target_without_a_pinned_host_key_is_refused_with_its_key_path():
    cfg = raw("prod")
    del cfg["monitoring"]["status_offsite"]["host_key"]
    with pytest.raises(ConfigError) as caught:
        build_stack(cfg, "prod")
    assert [str(p).split(":", 1)[0] for p in caught.value.problems] == ["monitoring.status_offsite.host_key"], caught.value.problems


@pytest.mark.parametrize("key, why", [
    ("ssh-ed25519 AAAA", "monitoring.status_offsite.host_key:"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKxllS0NufzY37um9AV0yQirVjSb6pMW5o5suJ110GP/\nevil", "monitoring.status_offsite.host_key:"),
])
def test_a_malformed_offsite_host_key_is_refused_with_its_key_path(key, why):
    cfg = raw("prod")
    cfg["monitoring"]["status_offsite"]["host_key"] = key
    with pytest.raises(ConfigError) as caught:
        build_stack(cfg, "prod")
    assert any(str(p).startswith(why) for p in caught.value.problems), caught.value.problems


def test_the_offsite_copy_pins_the_host_key_and_uses_the_programs_key():
    stack = model("prod")
    o = stack.monitoring.status_offsite
    files = {f.path: f for f in host_plan(stack, monitoring_host(stack)).files}
    assert files[inventory.OFFSITE_KNOWN_HOSTS].content == f"{o.host} {o.host_key}\n"
    key = files[inventory.OFFSITE_KEY]
    assert key.late == [inventory.LATE_OFFSITE_KEY] and key.mode == "0600" and key.owner == "prometheus"
    cfg = _host_config(stack)
    assert cfg["offsite"] == {"host": o.host, "port": 22, "user": o.user, "path": o.path, "key": inventory.OFFSITE_KEY,
                              "known_hosts": inventory.OFFSITE_KNOWN_HOSTS, "url": o.url}
    assert ["Off-site status copy", o.url] in [list(x) for x in cfg["monitoring_links"]]


def test_a_service_the_catalog_retires_is_listed_retired_with_its_date_and_redirect(tmp_path):
    cfg = raw("prod")
    cfg["services"]["lists"]["retired"] = {"date": "2026-11-30", "redirect": "https://loomio.hypha.coop/lists-moved"}
    stack = build_stack(cfg, "prod")
    (lists,) = [s for s in _host_config(stack)["services"] if s["name"] == "lists"]
    assert lists["retired"] == {"date": "2026-11-30", "redirect": "https://loomio.hypha.coop/lists-moved"}
    assert not lists["probed"]  # its probe stops (issue 16 item 5)
    with FakePrometheus() as prom:
        assert _build(_config(tmp_path, prom.url, stack=stack)).returncode == 0
    row = _row((tmp_path / "www" / "index.html").read_text(), "svc-lists")
    assert "retired on 2026-11-30, now https://loomio.hypha.coop/lists-moved" in _text(row)
    assert 'class="retired">retired<' in _row((tmp_path / "www" / "status.html").read_text(), "status-lists")
