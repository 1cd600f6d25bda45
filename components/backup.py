"""Proxmox image backups per stack (`pulumi_proxmoxve.backup.Job`) and the backup secrets Pulumi generates."""

from __future__ import annotations

import pulumi

from spec.model import Stack


def image_backups(stack: Stack, vms: dict, opts: pulumi.ResourceOptions) -> None:
    """The stack's Proxmox image backup job (issue 5)."""


def late_value(stack: Stack, name: str, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
    """The value behind a `borg/...` placeholder (issue 5)."""
    raise KeyError(f"late value {name!r} is not made yet")
