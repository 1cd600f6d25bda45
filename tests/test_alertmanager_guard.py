"""File tier: Alertmanager behind its guard, on loopback with the rendered files: a real nginx, a real
Alertmanager and a stand-in chat room. Every member reads, only admins silence or reload, no secret
is in what Alertmanager shows its readers, and alerts still reach the room through the relay.
"""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lab.hosts import stop_process
from render.roles import monitoring as mr
from render.plan import LATE_MARK
from render.roles import host_plan
from model.load import build_stack
from tests.program_runs import raw
from tests.test_monitoring_render import ALICE_PASSWORD, HASHES, _free_port, _wait_http, late_values, write_tree
from tests.tools import need as _need

pytestmark = pytest.mark.files

WEBHOOK_TOKEN = "syt_room_token_that_must_stay_secret"
SMTP_SECRET = "smtp-secret"


class _Room(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, self.headers.get("Authorization"), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def _stack():
    """Staging (carol is a member, alice an admin), with prod's alert mail so its SMTP login is there too."""
    cfg = raw("staging")
    cfg["monitoring"]["email"] = raw("prod")["monitoring"]["email"]
    cfg["monitoring"].update(group_wait="1s", group_interval="1s")
    return build_stack(cfg, "staging")




@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guard")
    _Room.received = []
    room = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Room)
    threading.Thread(target=room.serve_forever, daemon=True).start()
    room_url = f"http://127.0.0.1:{room.server_address[1]}/_matrix/hook?token={WEBHOOK_TOKEN}"
    stack = _stack()
    values = {**late_values(stack, room_url), mr.LATE_SMTP_PASSWORD: SMTP_SECRET}
    files = write_tree(stack, tmp, values)
    am_port, guard_port, relay_port = _free_port(), _free_port(), _free_port()
    lan = stack.hosts["monitor1"].lan_ip
    nginx_files = {f.path: LATE_MARK.sub(lambda m: values[m.group(1)], f.content)
                   for f in host_plan(stack, "monitor1").files if f.path.startswith("/etc/nginx/")}
    users = tmp / "guard.users"
    users.write_text(nginx_files[mr.GUARD_USERS])
    site = (nginx_files[mr.GUARD_SITE]
            .replace(f"listen {lan}:{mr.ALERTMANAGER_PORT};", f"listen 127.0.0.1:{guard_port};")
            .replace(f"listen {mr.RELAY_LISTEN};", f"listen 127.0.0.1:{relay_port};")
            .replace(f"http://{mr.ALERTMANAGER_LOOPBACK}", f"http://127.0.0.1:{am_port}")
            .replace(mr.GUARD_USERS, str(users)))
    (tmp / "guard.conf").write_text(site)
    temp = " ".join(f"{k}_temp_path {tmp}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # pytest's temporary directories are root's alone: the workers read the users file as root here.
    (tmp / "nginx.conf").write_text(
        f"user root;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\ndaemon off;\nevents {{}}\n"
        f"http {{ access_log off; {temp} include {tmp}/guard.conf; }}\n"
    )
    am_config = files[mr.ALERTMANAGER_CONFIG]
    am_config.write_text(am_config.read_text().replace(f"http://{mr.RELAY_LISTEN}", f"http://127.0.0.1:{relay_port}"))
    check = subprocess.run([_need("nginx"), "-t", "-q", "-c", str(tmp / "nginx.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    am = subprocess.Popen(
        [_need("prometheus-alertmanager"), f"--config.file={am_config}", f"--storage.path={tmp / 'am'}",
         f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
         f"--web.config.file={files[mr.ALERTMANAGER_WEB_CONFIG]}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    nginx = subprocess.Popen([_need("nginx"), "-c", str(tmp / "nginx.conf")], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_http(f"http://127.0.0.1:{am_port}/-/healthy", 15, am)  # a 401 is an answer
        _wait_http(f"http://127.0.0.1:{guard_port}/-/healthy", 15, nginx)
        yield {"guard": f"http://127.0.0.1:{guard_port}", "direct": f"http://127.0.0.1:{am_port}",
               "room_url": room_url, "values": values, "tmp": tmp}
    finally:
        stop_process(nginx)
        stop_process(am)
        room.shutdown()


def _call(url: str, login: str | None = None, password: str = ALICE_PASSWORD, method: str = "GET", body=None):
    """(status, body) of one request, with a basic login when `login` is given."""
    headers = {"Content-Type": "application/json"}
    if login:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _silence(login: str) -> dict:
    now = datetime.now(timezone.utc)
    return {"matchers": [{"name": "alertname", "value": ".+", "isRegex": True}], "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(), "createdBy": login, "comment": "guard test"}


def test_the_status_endpoint_holds_no_secret(guarded):
    status, body = _call(guarded["guard"] + "/api/v2/status", "carol")
    assert status == 200 and "original" in json.loads(body)["config"]
    for secret in (WEBHOOK_TOKEN, guarded["room_url"], SMTP_SECRET, mr.scrape_password(HASHES)):
        assert secret not in body
    assert mr.SMTP_PASSWORD_FILE.rsplit("/", 1)[1] in body  # the file's name is all it shows


def test_without_a_login_nothing_answers(guarded):
    assert _call(guarded["guard"] + "/api/v2/status")[0] == 401
    assert _call(guarded["guard"] + "/api/v2/status", "carol", password="wrong")[0] == 401
    # Not even the health check: the proxy's probe of the UI expects this 401.
    assert _call(guarded["guard"] + "/-/healthy")[0] == 401
    assert _call(guarded["guard"] + "/-/healthy", "carol")[0] == 200
    # Alertmanager itself, on loopback, lets in no member: only the guard's (and Prometheus') login.
    assert _call(guarded["direct"] + "/api/v2/status", "carol")[0] == 401
    assert _call(guarded["direct"] + "/api/v2/status", "alice")[0] == 401


def test_a_members_silence_and_reload_are_refused_and_an_admins_accepted(guarded):
    g = guarded["guard"]
    assert _call(g + "/api/v2/silences", "carol")[0] == 200  # reading is every member's
    assert _call(g + "/api/v2/silences", "carol", method="POST", body=_silence("carol"))[0] == 403
    assert _call(g + "/api/v1/silences", "carol", method="POST", body=_silence("carol"))[0] == 403
    assert _call(g + "/-/reload", "carol", method="POST")[0] == 403
    # An admin's name with a wrong password is no admin.
    assert _call(g + "/api/v2/silences", "alice", password="wrong", method="POST", body=_silence("alice"))[0] == 401
    status, body = _call(g + "/api/v2/silences", "alice", method="POST", body=_silence("alice"))
    assert status == 200, body
    silence = json.loads(body)["silenceID"]
    assert _call(g + f"/api/v2/silence/{silence}", "carol", method="DELETE")[0] == 403
    assert _call(g + f"/api/v2/silence/{silence}", "alice", method="DELETE")[0] == 200
    assert _call(g + "/-/reload", "alice", method="POST")[0] == 200


def test_prometheus_pushes_alerts_through_the_guard_and_they_reach_the_room_through_the_relay(guarded):
    g = guarded["guard"]
    password = guarded["values"][mr.LATE_SCRAPE_PASSWORD]
    alert = [{"labels": {"alertname": "GuardTest", "severity": "warning", "host": "bw1"}}]
    assert _call(g + "/api/v2/alerts", "carol", method="POST", body=alert)[0] == 403
    assert _call(g + "/api/v2/silences", mr.SCRAPE_USER, password, method="POST", body=_silence("p"))[0] == 403
    assert _call(g + "/api/v2/alerts", mr.SCRAPE_USER, password, method="POST", body=alert)[0] == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _Room.received:
        time.sleep(0.2)
    assert _Room.received, "no notification reached the room"
    path, authorization, body = _Room.received[0]
    # The room got its own URL with its token; the internal login went no further than the relay.
    assert path == "/_matrix/hook?token=" + WEBHOOK_TOKEN and authorization is None
    assert body["alerts"][0]["labels"]["alertname"] == "GuardTest"


def test_the_relay_refuses_anyone_without_the_internal_login(guarded):
    site = Path(guarded["tmp"] / "guard.conf").read_text()
    relay = site.split("listen 127.0.0.1:", 2)[2].split(";", 1)[0]
    url = f"http://127.0.0.1:{relay}{mr.RELAY_PATH}"
    assert _call(url, method="POST", body={})[0] == 401
    assert _call(url, "carol", method="POST", body={})[0] == 401
    assert _call(f"http://127.0.0.1:{relay}/other", method="POST", body={})[0] == 404


def test_a_host_that_is_proxy_and_monitoring_at_once_gets_one_nginx_with_both():
    """The guard sits in conf.d: the proxy's sites are hypha-<service>, and prod has a service alertmanager."""
    cfg = raw("prod")
    cfg["hosts"]["web1"]["roles"] = ["reverse_proxy", "monitoring"]
    cfg["hosts"]["monitor1"]["roles"] = ["app"]
    for svc in cfg["services"].values():
        if svc.get("host") == "monitor1":
            svc["host"] = "web1"
    plan = host_plan(build_stack(cfg, "prod"), "web1")  # asserts no two roles render one path
    paths = [f.path for f in plan.files]
    assert mr.GUARD_SITE in paths and "/etc/nginx/sites-enabled/hypha-alertmanager.conf" in paths
    assert plan.units.count("nginx") == 1 and plan.packages.count("nginx") == 1
    assert [path for path, unit in plan.absent if unit == "nginx"] == ["/etc/nginx/sites-enabled/default"]
