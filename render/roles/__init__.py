"""The one registry of roles that converge: each render/roles/ module exports a `ROLE` (render/plan.py).

A host's plan is the base, then each of its roles in sorted order, then the backup client (every
host that holds data is one). model/roles.py lists every role name; a test holds the two equal.
Every role is also registered with render/gather.py, which hands what a role publishes (zone records,
scrape targets, probes, alert rules) to the dns and monitoring roles.
Adding a role: README, "Adding a role".
"""

from __future__ import annotations

from model.stack import Stack

from .. import gather
from ..plan import HostPlan, Role
from . import backup, base, dns, gateway, mail, monitoring, reverse_proxy

# Roles a host may carry, by name (model/roles.py marks these as converging).
ROLES: dict[str, Role] = {
    r.name: r for r in (gateway.ROLE, dns.ROLE, reverse_proxy.ROLE, backup.ROLE, monitoring.ROLE, mail.ROLE)
}
# Applied to every host, not picked: first the base, last the backup client.
FIRST: tuple[Role, ...] = (base.ROLE,)
LAST: tuple[Role, ...] = (mail.CLIENT, backup.CLIENT)


def every_role() -> list[Role]:
    """Every Role, the implicit ones included (for what the lab and components collect from them)."""
    return [*FIRST, *ROLES.values(), *LAST]


# What each role publishes (zone records, scrapes, probes, rules) reaches the roles that gather it.
gather.register(every_role())


def host_plan(stack: Stack, host: str) -> HostPlan:
    """Everything `host` must hold: the base, its roles in sorted order, then the backup client."""
    plan = HostPlan(host)
    picked = [ROLES[r] for r in sorted(stack.hosts[host].roles) if r in ROLES]
    for role in (*FIRST, *picked, *LAST):
        role.contribute(stack, host, plan)
    paths = [f.path for f in plan.files]
    assert len(paths) == len(set(paths)), f"{host}: two roles render the same file"
    return plan
