"""The role contract: one list of role names (model/roles.py), one registry of the roles that
converge (render/roles/__init__.py), and each ROLE's declarations true of what it renders."""

from __future__ import annotations

import pytest

from model import roles as model_roles
from model.load import load_stack
from render import roles as render_roles
from render.plan import HostPlan
from render.roles import every_role, host_plan

pytestmark = pytest.mark.program

STACKS = ("staging", "prod")


def test_every_converging_role_has_a_module_and_every_module_a_converging_role():
    assert set(render_roles.ROLES) == set(model_roles.converging())
    labels = set(model_roles.HOST_ROLES) - set(model_roles.converging())
    assert labels and not labels & set(render_roles.ROLES)
    for name, role in render_roles.ROLES.items():
        assert role.name == name


def test_implicit_roles_are_not_names_a_host_can_pick():
    for role in (*render_roles.FIRST, *render_roles.LAST):
        assert role.name not in model_roles.ROLES


@pytest.mark.parametrize("stack_name", STACKS)
def test_declared_packages_cover_what_each_role_installs(stack_name):
    """A role's `packages` is a superset of what its contribute() adds on any committed host."""
    stack = load_stack(stack_name)
    for host in stack.hosts:
        for role in every_role():
            plan = HostPlan(host)
            if role in render_roles.ROLES.values() and role.name not in stack.hosts[host].roles:
                continue
            role.contribute(stack, host, plan)
            assert set(plan.packages) <= set(role.packages), (stack_name, host, role.name)


@pytest.mark.parametrize("stack_name", STACKS)
def test_a_label_role_renders_nothing_of_its_own(stack_name):
    """`web` and `app` name what runs on a host; adding one changes no file the host holds."""
    stack = load_stack(stack_name)
    host = next(iter(sorted(stack.hosts)))
    before = host_plan(stack, host)
    labels = [r for r in model_roles.HOST_ROLES if r not in render_roles.ROLES]
    h = stack.hosts[host]
    widened = stack.model_copy(update={"hosts": {**stack.hosts, host: h.model_copy(update={"roles": [*h.roles, *labels]})}})
    after = host_plan(widened, host)
    assert [f.path for f in after.files] == [f.path for f in before.files]


def test_what_a_new_role_publishes_reaches_the_zone_the_scrapes_the_probes_and_the_rules():
    """A role declares records, scrapes, probes, alert rules and blackbox modules on its Role; the dns
    and monitoring roles gather them from the registry (render/gather.py) without naming the role."""
    from render import gather
    from render.plan import Probe, Record, Role, Scrape
    from render.roles import dns, monitoring

    stack = load_stack("staging")
    zone = dns.zone_name(stack)
    host = sorted(stack.hosts)[0]
    ip = stack.hosts[host].lan_ip
    matrix = Role(
        "matrix", lambda s, h, p: None,
        zone_records=lambda s: [Record(f"matrix.{zone}", "TXT", '"v=matrix1"', 300)],
        scrapes=lambda s: [Scrape("synapse", host, f"{ip}:9000", (("service", "matrix"),))],
        probes=lambda s: [Probe("probe_matrix", host, "matrix_federation", f"{ip}:8448", f"https://matrix.{zone}:8448", "matrix")],
        alert_rules=lambda s: "  - name: matrix\n    rules:\n      - alert: SynapseDown\n        expr: up{job=\"synapse\"} == 0\n",
        blackbox_modules=lambda s, verify: "  matrix_federation:\n    prober: tcp\n",
    )
    before = (dns.zone_body(stack, stack.dns), monitoring.rules(stack))
    gather.register([*every_role(), matrix])
    try:
        body = dns.zone_body(stack, stack.dns)
        jobs = {j["job_name"]: j for j in monitoring.scrape_jobs(stack, stack.monitoring)}
        rules = monitoring.rules(stack)
        blackbox = monitoring.blackbox_config(stack, stack.monitoring)
    finally:
        gather.register(every_role())
    assert [line.split() for line in body.splitlines() if '"v=matrix1"' in line] == [["matrix", "300", "IN", "TXT", '"v=matrix1"']]
    assert jobs["synapse"]["static_configs"][0]["targets"] == [f"{ip}:9000"]
    assert jobs["synapse"]["static_configs"][0]["labels"]["service"] == "matrix"
    probe = jobs["probe_matrix"]["static_configs"][0]
    assert probe["targets"] == [f"{ip}:8448"] and probe["labels"]["module"] == "matrix_federation"
    assert "alert: SynapseDown" in rules and rules.startswith(before[1])
    assert "matrix_federation:" in blackbox
    assert (dns.zone_body(stack, stack.dns), monitoring.rules(stack)) == before


def test_the_gathering_roles_import_no_role_that_publishes():
    """dns and monitoring know what other roles publish only through render/gather.py."""
    import ast
    from pathlib import Path

    from model.load import ROOT

    publishers = {r.name for r in every_role() if any((r.zone_records, r.scrapes, r.probes, r.alert_rules, r.blackbox_modules))}
    assert "mail" in publishers
    for gatherer in ("dns", "monitoring"):
        tree = ast.parse(Path(ROOT / "render" / "roles" / f"{gatherer}.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 and not n.module for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}
        assert not imported & publishers, f"render/roles/{gatherer}.py imports {imported & publishers}"


@pytest.mark.parametrize("stack_name", STACKS)
def test_every_published_scrape_is_a_port_its_hosts_roles_open_to_the_monitoring_host(stack_name):
    """An exporter is said twice: as a Scrape (render, the scrape config) and as a role's scraped port
    (model/roles.py, the firewall and placement). Each scrape must be one of those ports."""
    from model.derive import inbound_rules
    from model.roles import scraped_ports
    from render import gather

    stack = load_stack(stack_name)
    scrapes = gather.scrapes(stack)
    assert scrapes
    for s in scrapes:
        port = int(s.target.rsplit(":", 1)[1])
        assert port in {p for role in stack.hosts[s.host].roles for p, _ in scraped_ports(role)}, s
        assert any(r.port == port and r.source and r.source.endswith("/32") for r in inbound_rules(stack, s.host)), s
