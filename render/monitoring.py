"""The monitoring role: Prometheus, Alertmanager, blackbox_exporter and pve-exporter, targets from the catalog."""

from __future__ import annotations

from spec.model import Stack


def monitoring(stack: Stack, host: str, plan) -> None:
    """Issue 6."""
