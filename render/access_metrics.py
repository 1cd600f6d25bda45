"""Request counts from the reverse proxy's access log: Debian's mtail reads nginx's log and serves
counters Prometheus scrapes (the proxy role's part of the inventory page, issue 16).

Decisions:
- nginx writes one extra log for this (log_format hypha_metrics, conf.d/hypha.conf) with no client
  address: the counts need none, and a log without addresses is one less thing to protect.
- Counted per virtual host (the serving block's canonical name, so a forged Host header cannot make
  new series) and status class, and per shortlink keyword only when the shortener redirected: the
  label values are bounded by the catalog and shortlinks.csv, whatever paths people try.
- mtail listens on the proxy's LAN address; the firewall lets only the monitoring host in
  (model/monitoring.py, inbound_rules). Set up only when the stack has a monitoring section.
"""

from __future__ import annotations

from model.derive_monitoring import MTAIL_PORT
from model.stack import Stack

from . import metrics
from .plan import HostPlan, ManagedFile
from .templates import render

PACKAGE = "mtail"
UNIT = "mtail"
PROGRAM = "/etc/mtail/hypha-access.mtail"
DEFAULTS = "/etc/default/mtail"
GROUPS_DROPIN = "/etc/systemd/system/mtail.service.d/hypha-groups.conf"
LOG = "/var/log/nginx/hypha-metrics.log"


def shortener_vhost(stack: Stack):
    """The name the link shortener's block serves (what nginx logs as its server_name), or None."""
    for _, svc in sorted(stack.services.items()):
        if svc.shortlinks and svc.public and svc.domains:
            return svc.domains[0]
    return None


def program(stack: Stack) -> str:
    return render(
        "reverse_proxy/access.mtail.j2",
        requests=metrics.HTTP_REQUESTS,
        hits=metrics.SHORTLINK_HITS,
        shortener=shortener_vhost(stack),
    )


def files(stack: Stack, host: str) -> list[ManagedFile]:
    return [
        ManagedFile(PROGRAM, program(stack), unit=UNIT, action="restart", check="mtail"),
        ManagedFile(
            DEFAULTS,
            render("reverse_proxy/mtail.default.j2", logs=LOG, host=str(stack.hosts[host].lan_ip), port=MTAIL_PORT),
            unit=UNIT,
            action="restart",
            check="shell",
        ),
        ManagedFile(GROUPS_DROPIN, render("reverse_proxy/mtail-groups.conf.j2"), unit=UNIT, action="restart"),
    ]


def contribute(stack: Stack, host: str, plan: HostPlan) -> None:
    """mtail on a proxy of a stack that is watched; nothing otherwise."""
    if stack.monitoring is None:
        return
    plan.files += files(stack, host)
    plan.packages.append(PACKAGE)
    plan.units.append(UNIT)
