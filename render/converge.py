"""One POSIX sh converge script per host, from its HostPlan; its sha256 is the remote command's trigger."""

from __future__ import annotations

import hashlib

from spec import derive
from spec.model import Stack

from .host import PEOPLE_GROUP, HostPlan, host_plan
from .templates import render

WIREGUARD_KEY = "/etc/wireguard/wg0.key"


def converge_script(stack: Stack, host: str, plan: HostPlan | None = None) -> str:
    """The script that brings `host` to its plan. Pure: same stack in, same bytes out."""
    plan = plan or host_plan(stack, host)
    return render(
        "converge.sh.j2",
        host=host,
        stack=stack.site.stack,
        people_group=PEOPLE_GROUP,
        packages=sorted(set(plan.packages)),
        people=plan.people,
        deploy_user=derive.DEPLOY_USER,
        files=plan.files,
        units=list(dict.fromkeys(plan.units)),
        derive_steps=plan.derive,
        absent=plan.absent,
        prepare="\n".join(x for x in plan.prepare if x),
        finish="\n".join(x for x in plan.finish if x),
        wireguard_key=WIREGUARD_KEY if "gateway" in stack.hosts[host].roles else None,
    )


def script_digest(script: str) -> str:
    return hashlib.sha256(script.encode()).hexdigest()
