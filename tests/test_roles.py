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
