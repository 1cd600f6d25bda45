"""Makes the late values the converge scripts ask for: secrets and keys that exist only once the program runs."""

from __future__ import annotations

from typing import Callable

import pulumi

from spec.model import Stack

from . import backup, monitoring

# A late value's name starts with the part of the program that makes it: `borg/...`, `monitoring/...`.
MAKERS: dict[str, Callable[[Stack, str, pulumi.ResourceOptions], pulumi.Output[str]]] = {
    "borg": backup.late_value,
    "monitoring": monitoring.late_value,
}


def late_values(stack: Stack, names: list[str], opts: pulumi.ResourceOptions) -> dict[str, pulumi.Output[str]]:
    """One Output per name, each made once however many hosts need it."""
    out = {}
    for name in sorted(set(names)):
        prefix = name.split("/", 1)[0]
        if prefix not in MAKERS:
            raise KeyError(f"late value {name!r}: nothing makes values named {prefix}/...; add a maker to components/late.py")
        out[name] = MAKERS[prefix](stack, name, opts)
    return out
