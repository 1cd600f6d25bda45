"""One POSIX sh converge script per host, from its HostPlan; its sha256 is the remote command's trigger."""

from __future__ import annotations

import base64
import hashlib
from typing import Mapping

from model import derive
from model.stack import Stack

from .plan import HostPlan
from .roles import host_plan
from .roles.base import PEOPLE_GROUP
from .quote import Shell, join_shell
from .templates import render
from .wire import LATE_PLACEHOLDER, LATE_TOKEN, check_cases, stage_call  # noqa: F401 (LATE_TOKEN: re-exported)

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
        # Shell code built by render/wire.py from constants and shell-quoted words.
        stage_calls=[Shell(stage_call(i, f)) for i, f in enumerate(plan.files, 1)],
        check_cases=Shell(check_cases()),
        units=list(dict.fromkeys(plan.units)),
        derive_steps=plan.derive,
        absent=plan.absent,
        prepare=join_shell(plan.prepare),
        finish=join_shell(plan.finish),
        wireguard_key=WIREGUARD_KEY if "gateway" in stack.hosts[host].roles else None,
    )


def script_digest(script: str) -> str:
    return hashlib.sha256(script.encode()).hexdigest()


def late_names(script: str) -> list[str]:
    """The late values a rendered script needs, sorted, each once."""
    return sorted(set(LATE_PLACEHOLDER.findall(script)))


def fill(script: str, values: Mapping[str, str]) -> str:
    """The script with every late value put in (base64, one line each), ready for the host's stdin.

    A value the script needs but `values` lacks is an error naming it: a host must never get a
    file with a hole in it.
    """
    missing = [n for n in late_names(script) if n not in values]
    if missing:
        raise KeyError(f"no value for late value(s) {', '.join(missing)}")
    return LATE_PLACEHOLDER.sub(lambda m: base64.b64encode(values[m.group(1)].encode()).decode(), script)
