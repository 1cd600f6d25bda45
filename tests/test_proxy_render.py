"""File tier for the reverse proxy: the proxy host's nginx config, as the converge check sees it, passes
the real `nginx -t` and gixy-ng with no HIGH or MEDIUM finding."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from render.roles import reverse_proxy as proxy
from render.roles import host_plan
from model import derive
from tests.program_runs import STACKS, model

pytestmark = pytest.mark.files

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
GIXY = str(Path(sys.executable).with_name("gixy"))


def _candidate(tmp_path: Path, stack: str, m=None) -> Path:
    """Debian's /etc/nginx with the proxy host's managed files over it, the way check_nginx builds it
    (for the committed config of `stack`, or the model `m`)."""
    if NGINX is None or not Path("/etc/nginx/nginx.conf").exists():
        pytest.fail("nginx is missing; run `make setup` (Debian package nginx)")
    m = m or model(stack)
    (host,) = derive.hosts_with_role(m, "reverse_proxy")
    plan = host_plan(m, host)
    root = tmp_path / "nginx"
    shutil.copytree("/etc/nginx", root, symlinks=True)
    for path, _unit in plan.absent:
        (root / path.removeprefix("/etc/nginx/")).unlink(missing_ok=True)
    for f in plan.files:
        if f.path.startswith("/etc/nginx/"):
            target = root / f.path.removeprefix("/etc/nginx/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f.content)
    for name, domains in proxy.certificates(m).items():
        d = root / "tls" / name
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
             "-subj", f"/CN={domains[0]}", "-keyout", str(d / "privkey.pem"), "-out", str(d / "fullchain.pem")],
            check=True, capture_output=True,
        )
    for conf in [*root.rglob("*.conf"), *root.joinpath("sites-enabled").iterdir()]:
        if conf.is_file() and not conf.is_symlink():
            conf.write_text(conf.read_text().replace("/etc/nginx/", f"{root}/"))
    return root / "nginx.conf"


@pytest.mark.parametrize("stack", STACKS)
def test_the_proxy_config_passes_nginx_t(tmp_path, stack):
    conf = _candidate(tmp_path, stack)
    result = subprocess.run([NGINX, "-t", "-q", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_nginx_t_would_catch_a_broken_site(tmp_path):
    conf = _candidate(tmp_path, "prod")
    site = conf.parent / "sites-enabled" / "hypha-loomio.conf"
    site.write_text(site.read_text().replace("proxy_pass http://", "proxy_pass htp:/"))
    assert subprocess.run([NGINX, "-t", "-q", "-c", str(conf)], capture_output=True, timeout=60).returncode != 0


@pytest.mark.parametrize("stack", STACKS)
def test_gixy_finds_nothing_high_or_medium(tmp_path, stack):
    conf = _candidate(tmp_path, stack)
    result = subprocess.run([GIXY, "-f", "json", str(conf)], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip(), result.stderr
    findings = json.loads(result.stdout)
    serious = [f for f in findings if str(f.get("severity", "")).upper() in ("HIGH", "MEDIUM")]
    assert serious == [], json.dumps(serious, indent=1)


def test_gixy_would_flag_a_header_injection(tmp_path):
    """The scan above can fail: gixy reports a classic HIGH finding in the same tree."""
    conf = _candidate(tmp_path, "prod")
    site = conf.parent / "sites-enabled" / "hypha-loomio.conf"
    site.write_text(site.read_text().replace("location / {", "location ~ /v1/((?<action>[^.]*)\\.json)?$ {\n\t\tadd_header X-Action $action;", 1))
    result = subprocess.run([GIXY, "-f", "json", str(conf)], capture_output=True, text=True, timeout=120)
    assert any(str(f.get("severity", "")).upper() in ("HIGH", "MEDIUM") for f in json.loads(result.stdout))


def test_every_public_service_gets_a_site_with_tls_and_http_goes_to_https():
    m = model("prod")
    plan = host_plan(m, "web1")
    files = {f.path: f.content for f in plan.files}
    for name, svc in m.services.items():
        site = files.get(f"{proxy.SITE_PREFIX}{name}.conf")
        assert (site is not None) is svc.public, name
        if site:
            assert f"ssl_certificate {proxy.TLS_DIR}/{name}/fullchain.pem;" in site
            assert "include /etc/nginx/snippets/hypha-headers.conf;" in site
    acme = files[f"{proxy.SITE_PREFIX}acme.conf"]
    assert "return 301 https://$host$request_uri;" in acme and "/.well-known/acme-challenge/" in acme
    assert "server_tokens off;" in files["/etc/nginx/conf.d/hypha.conf"]
    assert "Strict-Transport-Security" in files["/etc/nginx/snippets/hypha-headers.conf"]
    assert (proxy.DEBIAN_DEFAULT_SITE, "nginx") in plan.absent


def test_the_acme_directory_comes_from_config():
    for stack in STACKS:
        m = model(stack)
        step = proxy.certbot_step(m)
        assert f"--server {m.tls.acme_directory} " in step
    assert "acme-staging" in model("staging").tls.acme_directory
    assert "acme-staging" not in model("prod").tls.acme_directory
