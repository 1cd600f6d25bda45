"""A bare lab host starts like a fresh VM: every unit a role's converge enables is off until that converge, and none is masked.

The lab's DISABLE list is built from each role's `bare_units` (render/roles/*.py); these tests hold
the declarations true of what each role's plan enables on the committed stacks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab import hosts as labmod
from model.load import load_stack
from render import roles as render_roles
from render.plan import HostPlan, Role
from render.roles import every_role, host_plan

pytestmark = pytest.mark.program

STACKS = ("staging", "prod")
UNIT_DIRS = (Path("/lib/systemd/system"), Path("/usr/lib/systemd/system"), Path("/etc/systemd/system"))


def _unit(name: str) -> str:
    """A plan's unit name as systemd's unit file name (`ssh` -> `ssh.service`)."""
    return name if re.search(r"\.(service|timer|socket|path|mount|target)$", name) else f"{name}.service"


def _template_has_default_instance(instance: str) -> bool:
    """Whether the template behind `instance` (wg-quick@wg0 -> wg-quick@.service) carries DefaultInstance=,
    the only way a package install enables an instance; False when the template is not on this machine."""
    template = re.sub(r"@[^.]*\.", "@.", instance)
    for d in UNIT_DIRS:
        if (d / template).is_file():
            return "DefaultInstance=" in (d / template).read_text()
    return False


def _uncovered(role, plan: HostPlan) -> list[str]:
    """Units the role's plan enables that a bare lab host might start with on (or masked)."""
    own_unit_files = {Path(f.path).name for f in plan.files if f.path.startswith("/etc/systemd/system/")}
    missing = []
    for unit in map(_unit, plan.units):
        if unit in role.bare_units or labmod.kept_on(unit):
            continue
        if unit in own_unit_files:  # written by the converge itself: no package ships it, nothing enabled it
            continue
        if "@" in unit and not _template_has_default_instance(unit):
            continue
        missing.append(unit)
    return missing


def test_the_lab_disables_exactly_what_the_roles_declare():
    declared = [u for role in every_role() for u in role.bare_units]
    assert set(labmod.DISABLE) == set(declared)
    assert len(labmod.DISABLE) == len(set(labmod.DISABLE))


@pytest.mark.parametrize("stack_name", STACKS)
def test_every_unit_a_role_enables_is_off_in_a_bare_lab_host(stack_name):
    """Per role, on every committed host that has it: what its contribute() enables is in its own
    `bare_units`, or kept on by the lab like on a VM, or a unit the converge itself writes."""
    stack = load_stack(stack_name)
    for host in stack.hosts:
        for role in every_role():
            if role in render_roles.ROLES.values() and role.name not in stack.hosts[host].roles:
                continue
            plan = HostPlan(host)
            role.contribute(stack, host, plan)
            assert _uncovered(role, plan) == [], (stack_name, host, role.name)


def test_an_undeclared_unit_is_found():
    """The check above can fail: a role that enables a packaged unit it does not declare."""
    undeclared = Role("probe", lambda stack, host, plan: None)
    plan = HostPlan("h", units=["named", "wg-quick@wg0", "systemd-timesyncd"])
    assert _uncovered(undeclared, plan) == ["named.service"]
    assert _uncovered(Role("probe", undeclared.contribute, bare_units=("named.service",)), plan) == []


@pytest.mark.parametrize("stack_name", STACKS)
def test_the_lab_masks_no_unit_a_committed_plan_enables(stack_name):
    """A masked unit cannot be enabled, so the converge would fail on it; the mask list is read from this machine."""
    stack = load_stack(stack_name)
    masked = set(labmod._units_to_mask())
    for host in stack.hosts:
        enabled = {_unit(u) for u in host_plan(stack, host).units}
        assert not enabled & masked, (stack_name, host)
