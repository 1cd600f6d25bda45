"""What follows from a valid stack's `monitoring` section (model/monitoring.py): where its daemons
listen, which host runs them, and which catalog services publish their UIs.
"""

from __future__ import annotations

from typing import Optional

from . import facts

# Where the monitoring host's daemons listen. Prometheus and Alertmanager on its LAN address (the
# UIs, and the proxy in front of them), the exporters only on loopback (Prometheus asks them).
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
BLACKBOX_PORT = 9115
PVE_EXPORTER_PORT = 9221
UI_PORTS = (("prometheus", PROMETHEUS_PORT), ("alertmanager", ALERTMANAGER_PORT))
"""The UIs members reach (monitoring.ui), each with its port on the monitoring host."""


def monitoring_host(stack) -> Optional[str]:
    """The host with role `monitoring` (model/check_monitoring.py allows one), or None."""
    return facts.monitoring_host(stack.hosts)


def ui_service(services, host: Optional[str], port: int) -> Optional[str]:
    """The public catalog service on `host` at `port` (the proxy serves a UI through it), or None.
    A retired one publishes nothing: the proxy answers its names with a redirect or 410."""
    return next(
        (n for n, s in sorted(services.items()) if s.host == host and s.port == port and s.public and s.retired is None), None
    )


def ui_services(stack) -> dict[str, Optional[str]]:
    """`prometheus`/`alertmanager` to the catalog service that publishes that UI (its port, on the
    monitoring host), or None. Only public ones count: they are what the proxy serves."""
    host = monitoring_host(stack)
    return {ui: ui_service(stack.services, host, port) for ui, port in UI_PORTS}
