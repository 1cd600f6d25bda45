"""The facts every layer asks (model/facts.py) give one answer for a validated stack and for the partly
parsed config the checks see, where an entry that failed to parse is missing; and a cross-field check
is one entry of model/checks.py's list, run on that partly parsed config like the others."""

from __future__ import annotations

import copy

import pytest

from model import checks, derive, derive_backup, derive_monitoring, facts
from model.errors import ConfigError, Problem
from model.load import build_stack, load_stack, read_stack_config

pytestmark = pytest.mark.program


@pytest.fixture(scope="module")
def prod():
    return load_stack("prod")


def test_the_prod_stack_has_one_gateway_target_monitoring_host_front_and_name_server(prod):
    assert facts.gateway_name(prod.hosts) == derive.gateway_name(prod) == "gateway"
    assert facts.backup_target(prod.backup, prod.hosts) == derive_backup.target_name(prod) == "backup1"
    assert facts.monitoring_host(prod.hosts) == derive_monitoring.monitoring_host(prod) == "monitor1"
    assert facts.front_host(prod.hosts) == "web1"
    assert facts.proxies(prod.hosts) == derive.hosts_with_role(prod, "reverse_proxy") == ["web1"]
    assert facts.dns_hosts(prod.hosts) == ["dns"]


def test_backup_clients_are_the_hosts_holding_data_except_the_target(prod):
    clients = facts.backup_clients(prod.hosts, prod.services, "backup1")
    assert clients == derive_backup.clients(prod) == ["bw1", "lists", "loomio", "monitor1"]
    # The target holds data (its repositories) but is not its own client.
    assert facts.holds_data(prod.hosts, prod.services, "backup1")
    assert not facts.holds_data(prod.hosts, prod.services, "gateway")


def test_a_host_that_failed_to_parse_is_no_client_while_its_services_still_say_it_holds_data(prod):
    hosts = {n: h for n, h in prod.hosts.items() if n != "loomio"}
    assert facts.holds_data(hosts, prod.services, "loomio")  # its service declares data paths and a database
    assert facts.backup_clients(hosts, prod.services, "backup1") == ["bw1", "lists", "monitor1"]
    assert list(facts.services_on(prod.services, "loomio")) == ["loomio"]


def test_there_is_no_gateway_unless_exactly_one_host_has_the_role(prod):
    without = {n: h for n, h in prod.hosts.items() if n != "gateway"}
    assert facts.gateway_name(without) is None
    two = {**prod.hosts, "web1": prod.hosts["web1"].model_copy(update={"roles": ["gateway"]})}
    assert facts.gateway_name(two) is None


def test_a_named_backup_target_is_the_answer_even_before_it_parsed(prod):
    named = prod.backup.model_copy(update={"target": "backup2"})
    assert facts.backup_target(named, prod.hosts) == "backup2"
    assert facts.backup_target(None, prod.hosts) is None
    two = {**prod.hosts, "bw1": prod.hosts["bw1"].model_copy(update={"roles": ["backup_target"]})}
    assert facts.backup_target(prod.backup, two) is None


def test_a_check_added_to_the_list_runs_on_the_partly_parsed_config_with_the_others(monkeypatch):
    seen = {}

    def every_host_is_declared(c):
        seen["hosts"], seen["declared"] = set(c["hosts"]), set(c.declared["hosts"])
        return [Problem(f"hosts.{n}", "was declared but did not parse") for n in sorted(c.declared["hosts"] - set(c["hosts"]))]

    monkeypatch.setattr(checks, "CHECKS", [*checks.CHECKS, ("hosts", every_host_is_declared)])
    raw = copy.deepcopy(read_stack_config("staging"))
    raw["hosts"]["bw1"]["cores"] = "many"
    with pytest.raises(ConfigError) as err:
        build_stack(raw, "staging")
    assert "bw1" in seen["declared"] and "bw1" not in seen["hosts"]
    assert Problem("hosts.bw1", "was declared but did not parse") in err.value.problems
    # The entries already in the list still ran: the parse error itself is reported too.
    assert any(p.path == "hosts.bw1.cores" for p in err.value.problems)
