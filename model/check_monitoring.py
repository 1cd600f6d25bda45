"""Checks of the `monitoring` section (model/monitoring.py) against the catalog: one monitoring host,
a receiver for the alerts, and the services that publish the UIs when they sit behind the proxy.
"""

from __future__ import annotations

from . import facts
from .derive_monitoring import UI_PORTS, ui_service
from .errors import Problem


def check_monitoring(monitoring, site, hosts, services, people) -> list[Problem]:
    """Cross-field checks of the monitoring section against the catalog."""
    out: list[Problem] = []
    add = lambda path, msg: out.append(Problem(path, msg))  # noqa: E731
    mon_hosts = facts.hosts_with_role(hosts, "monitoring")
    if len(mon_hosts) > 1:
        add("hosts", f"{len(mon_hosts)} hosts have role `monitoring` ({', '.join(mon_hosts)}); one Prometheus watches the stack, keep the role on one")
    if monitoring is None:
        return out
    if not mon_hosts:
        add("monitoring", "is set but no host has role `monitoring`; add the role to a host (or remove the section)")
        return out
    if monitoring.email is None and monitoring.matrix is None:
        add("monitoring", "has no receiver, so alerts would reach nobody; add monitoring.email and/or monitoring.matrix")
    if monitoring.matrix is not None and (monitoring.matrix.url is None) == (not monitoring.matrix.url_secret):
        add("monitoring.matrix", "needs exactly one of `url` and `url_secret: true` (the secret alertMatrixWebhookUrl)")
    if monitoring.ui == "proxy":
        host = mon_hosts[0]
        for ui, port in UI_PORTS:
            if ui_service(services, host, port) is None:
                add(
                    "monitoring.ui",
                    f"is `proxy` but no public service publishes the {ui} UI; add services.{ui} "
                    f"{{host: {host}, port: {port}, public: true, domains: [<name>]}} or set ui: vpn",
                )
    return out
