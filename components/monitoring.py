"""The monitoring secrets: the Proxmox exporter's API token and alert routing credentials."""

from __future__ import annotations

import pulumi

from spec.model import Stack


def late_value(stack: Stack, name: str, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
    """The value behind a `monitoring/...` placeholder (issue 6)."""
    raise KeyError(f"late value {name!r} is not made yet")
