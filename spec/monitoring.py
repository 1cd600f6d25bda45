"""The `monitoring` section: what Prometheus scrapes and probes, alert routing and who sees the UIs."""

from __future__ import annotations

from pydantic import Field

from .base import _Model
from .errors import Problem


def inbound_rules(stack, host: str) -> list:
    """Firewall allow rules (spec.derive.Rule) this section adds to `host` (issue 6: e.g. the UIs from the VPN)."""
    return []


class Monitoring(_Model):
    """Filled in by issue 6."""


def check_monitoring(monitoring, site, hosts, services, people) -> list[Problem]:
    """Cross-field checks of the monitoring section against the catalog (issue 6)."""
    return []
