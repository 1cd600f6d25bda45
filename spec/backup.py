"""The `backup` section: borg target, retention, offsite copy, restore drill and Proxmox image backups."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import _Model
from .errors import Problem


def inbound_rules(stack, host: str) -> list:
    """Firewall allow rules (spec.derive.Rule) this section adds to `host` (issue 5: borg over SSH from each client to the target)."""
    return []


class Database(_Model):
    engine: str = Field(description="Database engine; dumped by borgmatic's hook for it (`postgresql`, `mysql`).")
    name: str = Field(description="Database name (`all` for every database of the server).")


class Backup(_Model):
    """Filled in by issue 5."""


def check_backup(backup, site, hosts, services) -> list[Problem]:
    """Cross-field checks of the backup section against hosts and services (issue 5)."""
    return []
