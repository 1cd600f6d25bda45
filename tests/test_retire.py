"""Retiring a service (issue 16 item 5): the catalog says so, the proxy answers its names with a
permanent redirect or 410, nothing probes or opens it any more, its names stay in the zone, and bad
input about a retirement is refused with its key path."""

from __future__ import annotations

import copy
import datetime
import functools
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import derive
from model.errors import ConfigError
from model.load import build_stack, read_stack_config
from model.stack import GONE_STATUS, REDIRECT_STATUS, Retired

Raw = dict[str, Any]

pytestmark = pytest.mark.program


@functools.lru_cache(maxsize=None)
def _committed(stack: str) -> Raw:
    return read_stack_config(stack)


def config(stack: str = "prod") -> Raw:
    return copy.deepcopy(_committed(stack))


def retire(raw: Raw, service: str, **retired: Any) -> Raw:
    raw["services"][service]["retired"] = {"date": "2026-11-30", **retired}
    return raw


def refused(raw: Raw, stack: str = "prod") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        build_stack(raw, stack)
    return caught.value


def messages_at(exc: ConfigError, path: str) -> list[str]:
    found = [p.message for p in exc.problems if p.path == path]
    assert found, f"no problem at {path!r}; got:\n{exc}"
    return found


# --- the model ---------------------------------------------------------------------------------------


def test_retired_with_a_redirect_answers_301_and_without_one_410():
    assert Retired.model_validate({"date": "2026-11-30", "redirect": "https://meet.jit.si/"}).status == REDIRECT_STATUS == 301
    gone = Retired.model_validate({"date": "2026-11-30"})
    assert gone.gone and gone.status == GONE_STATUS == 410


def test_the_retirement_date_is_a_date_read_from_iso_text():
    stack = build_stack(retire(config(), "lists"), "prod")
    assert stack.services["lists"].retired.date == datetime.date(2026, 11, 30)
    assert stack.services["lists"].model_dump(mode="json")["retired"] == {"date": "2026-11-30", "redirect": None}


@pytest.mark.parametrize(
    "date, words",
    [
        ("30/11/2026", "YYYY-MM-DD"),
        ("2026-11-31", "not a day of the calendar"),
        ("2026-13-01", "not a day of the calendar"),
        ("20261130", "YYYY-MM-DD"),
        ("2026-W48-1", "YYYY-MM-DD"),
        ("2026-11-30T10:00:00", "YYYY-MM-DD"),
        ("2026-11-30\n", "control character"),
        ("0999-01-01", "before 2000"),
        (20261130, "a number, not a date"),
        (True, "a boolean, not a date"),
    ],
)
def test_a_retirement_date_in_an_impossible_format_is_refused_at_its_key(date, words):
    raw = config()
    raw["services"]["lists"]["retired"] = {"date": date}
    assert any(words in m for m in messages_at(refused(raw), "services.lists.retired.date"))


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://meet.jit.si/", "https://"),
        ("ftp://meet.jit.si/", "https://"),
        ("//meet.jit.si/", "https://"),
        ("https://", "https://"),
        ("https://meet.jit.si/$host", "character"),
        ("https://meet.jit.si/ x", "character"),
        ("https://user@meet.jit.si/", "https://"),
    ],
)
def test_a_redirect_that_is_not_https_is_refused_at_its_key(url, words):
    raw = retire(config(), "lists", redirect=url)
    assert any(words in m for m in messages_at(refused(raw), "services.lists.retired.redirect"))


def test_an_unknown_key_under_retired_is_refused():
    raw = retire(config(), "lists", reason="moved")
    messages_at(refused(raw), "services.lists.retired.reason")


# --- checks across the catalog -------------------------------------------------------------------------


def test_a_redirect_to_the_services_own_name_is_a_loop():
    raw = retire(config(), "lists", redirect="https://lists.hypha.coop/archive")
    assert any("loop" in m for m in messages_at(refused(raw), "services.lists.retired.redirect"))


def test_a_redirect_to_another_retired_service_is_refused():
    raw = retire(config(), "loomio")
    raw = retire(raw, "lists", redirect="https://loomio.hypha.coop/")
    (message,) = messages_at(refused(raw), "services.lists.retired.redirect")
    assert "services.loomio" in message and "410 Gone" in message


def test_a_redirect_on_a_service_the_proxy_does_not_serve_is_refused():
    raw = config("staging")
    retire(raw, "prometheus", redirect="https://hypha.coop/")
    raw["monitoring"]["ui"] = "vpn"
    assert any("not public" in m for m in messages_at(refused(raw, "staging"), "services.prometheus.retired.redirect"))


def test_a_retired_shortener_must_stop_being_the_shortener():
    raw = retire(config(), "link", redirect="https://hypha.coop/")
    messages_at(refused(raw), "services.link.shortlinks")


def test_a_retired_ui_no_longer_publishes_the_monitoring_ui():
    raw = retire(config(), "alertmanager")
    assert any("alertmanager UI" in m for m in messages_at(refused(raw), "monitoring.ui"))


def test_a_retired_service_may_outlive_its_host():
    raw = retire(config(), "loomio", redirect="https://hypha.coop/decisions")
    del raw["hosts"]["loomio"]
    raw["backup"].get("storage_quotas", {}).pop("loomio", None)
    stack = build_stack(raw, "prod")
    assert "loomio" not in stack.hosts and stack.services["loomio"].retired.redirect == "https://hypha.coop/decisions"


def test_a_live_service_still_needs_a_known_host():
    raw = config()
    del raw["hosts"]["lists"]
    assert any("unknown host" in m for m in messages_at(refused(raw), "services.lists.host"))


def test_a_retired_services_port_is_closed_and_free_for_another_service():
    raw = retire(config(), "lists")
    stack = build_stack(raw, "prod")
    assert not any(r.port == 8000 for r in derive.inbound_rules(stack, "lists"))
    raw["services"]["lists2"] = {"host": "lists", "domains": ["lists2.hypha.coop"], "port": 8000, "public": True}
    stack = build_stack(raw, "prod")
    assert any(r.port == 8000 and "lists2" in r.comment for r in derive.inbound_rules(stack, "lists"))


def test_a_retired_services_data_is_still_backed_up_while_its_host_exists():
    from model import derive_backup as backup

    stack = build_stack(retire(config(), "lists"), "prod")
    assert "lists" in backup.clients(stack)
    assert "/var/lib/mailman3" in backup.client_paths(stack, "lists")


def test_the_plan_endpoints_show_a_retired_service_as_retired():
    raw = retire(config(), "lists", redirect="https://hypha.coop/lists")
    retire(raw, "loomio")
    ends = {e["url"]: e["upstream"] for e in derive.public_endpoints(build_stack(raw, "prod"))}
    assert ends["https://lists.hypha.coop/"] == "retired 2026-11-30: 301 https://hypha.coop/lists"
    assert ends["https://loomio.hypha.coop/"] == "retired 2026-11-30: 410 gone"


# --- what the hosts get --------------------------------------------------------------------------------


def _retired_prod():
    """prod with lists retired to a page on the main site and loomio retired without a redirect."""
    raw = retire(config(), "lists", redirect="https://hypha.coop/lists?from=lists&why=retired")
    retire(raw, "loomio")
    return build_stack(raw, "prod")


@pytest.fixture
def links_elsewhere(monkeypatch, tmp_path):
    """The committed shortlinks.csv with its links to lists and loomio pointed elsewhere, as the
    refusal below asks a retirement to do."""
    from render import shortlinks

    text = re.sub(r"https://(lists|loomio)\.hypha\.coop/[^\n]*", r"https://hypha.coop/\1", shortlinks.read(shortlinks.CSV_PATH))
    path = tmp_path / "shortlinks.csv"
    path.write_text(text)
    monkeypatch.setattr(shortlinks, "CSV_PATH", path)
    return path


def _proxy_files(stack) -> dict[str, str]:
    from render.roles import host_plan

    (proxy,) = derive.hosts_with_role(stack, "reverse_proxy")
    return {f.path: f.content for f in host_plan(stack, proxy).files}


def test_a_retired_services_names_answer_its_redirect_on_443_and_80(links_elsewhere):
    files = _proxy_files(_retired_prod())
    site = files["/etc/nginx/sites-enabled/hypha-lists.conf"]
    assert site.count('return 301 "https://hypha.coop/lists?from=lists&why=retired";') == 2
    assert "listen 443 ssl" in site and "listen 80;" in site and "server_name lists.hypha.coop;" in site
    # Renewals keep working: the challenge is still answered on port 80.
    assert "location /.well-known/acme-challenge/" in site


def test_a_retired_service_without_a_redirect_answers_410(links_elsewhere):
    site = _proxy_files(_retired_prod())["/etc/nginx/sites-enabled/hypha-loomio.conf"]
    assert site.count('return 410 "loomio.hypha.coop was retired on 2026-11-30 and is gone.";') == 2


def test_a_retired_services_upstream_is_no_longer_proxied(links_elsewhere):
    stack = _retired_prod()
    files = _proxy_files(stack)
    upstreams = {f"{stack.hosts[h].lan_ip}:{p}" for h, p in (("lists", 8000), ("loomio", 3000))}
    assert not [path for path, text in files.items() for u in upstreams if u in text]
    # The live services still are.
    assert "proxy_pass http://10.0.1.13:8080;" in files["/etc/nginx/sites-enabled/hypha-www.conf"]


def test_port_80_no_longer_sends_retired_names_through_https(links_elsewhere):
    acme = _proxy_files(_retired_prod())["/etc/nginx/sites-enabled/hypha-acme.conf"]
    assert "lists.hypha.coop" not in acme and "loomio.hypha.coop" not in acme and "hypha.coop" in acme


def test_a_retired_services_certificate_keeps_being_renewed(links_elsewhere):
    from render.roles import reverse_proxy

    stack = _retired_prod()
    assert reverse_proxy.certificates(stack)["lists"] == ["lists.hypha.coop"]
    assert "-d lists.hypha.coop" in reverse_proxy.certbot_step(stack)


def test_a_retired_service_has_no_probe_and_so_no_alerts(links_elsewhere):
    from render.roles import monitoring

    stack = _retired_prod()
    probed = {p["labels"].get("service") for p in monitoring.http_probes(stack, stack.monitoring)}
    assert "lists" not in probed and "loomio" not in probed and "www" in probed
    prometheus = monitoring.prometheus_config(stack, stack.monitoring)
    assert "lists.hypha.coop" not in prometheus and "loomio.hypha.coop" not in prometheus


def test_a_retired_services_names_stay_in_the_zone(links_elsewhere):
    from render.roles import dns

    stack = _retired_prod()
    records = {(r.name, r.type, r.data) for r in dns.zone_records(stack, stack.dns)}
    front = stack.hosts["web1"]
    for name in ("lists.hypha.coop", "loomio.hypha.coop"):
        assert (name, "A", str(front.public_ipv4)) in records
        assert (name, "AAAA", str(front.public_ipv6)) in records


def test_a_shortlink_to_a_retired_service_is_refused_naming_file_line_and_service():
    from ops import mockrun
    from render import shortlinks

    raw = retire(config(), "lists", redirect="https://hypha.coop/lists")
    with pytest.raises(shortlinks.ShortlinksError) as caught:
        mockrun.run_stack("prod", raw=raw)
    assert mockrun.last_run.resources == [], "resources were registered before the shortlinks were refused"
    line = next(i for i, row in enumerate(shortlinks.read(shortlinks.CSV_PATH).splitlines(), 1) if "lists.hypha.coop" in row)
    (problem,) = caught.value.problems
    assert problem.path == f"shortlinks.csv:{line}"
    assert "services.lists" in problem.message and "retired on 2026-11-30" in problem.message
    assert "https://hypha.coop/lists" in problem.message


def test_an_alias_to_a_shortlink_of_a_retired_service_is_reported_once_at_the_link():
    from render import shortlinks

    text = "keyword,destination_url\nmeet,https://meet.hypha.coop/room\nvideo,https://link.hypha.coop/meet\n"
    links = shortlinks.parse(text, shortener_host="link.hypha.coop")
    gone = {"meet.hypha.coop": ("meet", Retired.model_validate({"date": "2026-11-30"}))}
    (problem,) = shortlinks.retired_problems(links, gone)
    assert problem.path == "shortlinks.csv:2" and "410 Gone" in problem.message and "remove the line" in problem.message


def test_make_plan_shows_a_retired_service_as_retired(links_elsewhere):
    from ops import plan

    raw = retire(config(), "lists", redirect="https://hypha.coop/lists")
    retire(raw, "loomio")
    text = plan.format_report(plan.build_report("prod", raw=raw))
    assert "Retired services" in text
    assert any(l.split()[:4] == ["lists", "since", "2026-11-30", "301"] and "https://hypha.coop/lists" in l for l in text.splitlines())
    assert any(l.split()[:4] == ["loomio", "since", "2026-11-30", "410"] and "still backed up" in l for l in text.splitlines())
    assert "https://lists.hypha.coop/" in text and "retired 2026-11-30: 301 https://hypha.coop/lists" in text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_a_hostile_redirect_is_refused_or_reaches_nginx_as_one_word_meaning_itself(tail):
    from pydantic import ValidationError

    from render.quote import nginx_str

    url = "https://meet.jit.si/" + tail
    try:
        r = Retired.model_validate({"date": "2026-11-30", "redirect": url})
    except ValidationError:
        return
    # Nothing that ends a directive, opens a block, expands a variable or splits a header line.
    assert not set(r.redirect) & set(" \t\n\r\"';{}$\\`\x00\u2028")
    word = nginx_str(r.redirect)
    assert word == r.redirect or word == f'"{r.redirect}"'
