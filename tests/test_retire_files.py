"""File tier for retiring a service (issue 16 item 5): the proxy's config with a redirected and a gone
service passes the real `nginx -t` (no duplicate port-80 name) and gixy-ng with no HIGH or MEDIUM finding."""

from __future__ import annotations

import pytest

from tests.test_retire import _retired_prod, links_elsewhere  # noqa: F401 - the fixture, by name

pytestmark = pytest.mark.files


def test_the_proxy_config_with_retired_services_passes_nginx_t_and_gixy(tmp_path, links_elsewhere):
    import json
    import subprocess

    from tests.test_proxy_render import GIXY, NGINX, _candidate

    conf = _candidate(tmp_path, "prod", _retired_prod())
    assert (conf.parent / "sites-enabled" / "hypha-lists.conf").read_text().count("return 301") == 2
    result = subprocess.run([NGINX, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # A name on two port-80 servers would be a warning ("conflicting server name"), not an error.
    assert "conflicting" not in result.stderr, result.stderr
    found = json.loads(subprocess.run([GIXY, "-f", "json", str(conf)], capture_output=True, text=True, timeout=120).stdout)
    assert [f for f in found if str(f.get("severity", "")).upper() in ("HIGH", "MEDIUM")] == []
