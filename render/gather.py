"""What roles publish for other roles, gathered: zone records (for the dns role), scrape targets,
probes, alert rules and blackbox modules (for the monitoring role).

A role declares these as data on its `Role` (render/plan.py); the one registry, render/roles/__init__.py,
registers every role here when its package is imported, which Python does before any role module
runs. So the gathering roles never import the publishing ones: a new role adds records or alerts
without a line in dns.py or monitoring.py.
"""

from __future__ import annotations

from model.stack import Stack

from .plan import Probe, Record, Role, Scrape

_ROLES: tuple[Role, ...] = ()


def register(roles: list[Role]) -> None:
    global _ROLES
    _ROLES = tuple(roles)


def _publishers(hook: str) -> list:
    if not _ROLES:
        raise RuntimeError("no roles registered: import render.roles (its registry registers them)")
    return [getattr(role, hook) for role in _ROLES if getattr(role, hook) is not None]


def zone_records(stack: Stack) -> list[Record]:
    return [r for publish in _publishers("zone_records") for r in publish(stack)]


def scrapes(stack: Stack) -> list[Scrape]:
    return [s for publish in _publishers("scrapes") for s in publish(stack)]


def probes(stack: Stack) -> list[Probe]:
    return [p for publish in _publishers("probes") for p in publish(stack)]


def alert_rules(stack: Stack) -> str:
    return "".join(publish(stack) for publish in _publishers("alert_rules"))


def blackbox_modules(stack: Stack, verify: bool) -> str:
    return "".join(publish(stack, verify) for publish in _publishers("blackbox_modules"))
