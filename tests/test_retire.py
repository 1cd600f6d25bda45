"""Retiring a service (issue 16 item 5): the catalog says so, the proxy answers its names with a
permanent redirect or 410, nothing probes or opens it any more, its names stay in the zone, and bad
input about a retirement is refused with its key path."""

from __future__ import annotations

import copy
import datetime
import functools
from typing import Any

import pytest

from model import derive
from model.errors import ConfigError
from model.load import build_stack, read_stack_config
from model.stack import GONE_STATUS, REDIRECT_STATUS, Retired

Raw = dict[str, Any]


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
    from model import backup

    stack = build_stack(retire(config(), "lists"), "prod")
    assert "lists" in backup.clients(stack)
    assert "/var/lib/mailman3" in backup.client_paths(stack, "lists")


def test_the_plan_endpoints_show_a_retired_service_as_retired():
    raw = retire(config(), "lists", redirect="https://hypha.coop/lists")
    retire(raw, "loomio")
    ends = {e["url"]: e["upstream"] for e in derive.public_endpoints(build_stack(raw, "prod"))}
    assert ends["https://lists.hypha.coop/"] == "retired 2026-11-30: 301 https://hypha.coop/lists"
    assert ends["https://loomio.hypha.coop/"] == "retired 2026-11-30: 410 gone"
