"""Makes the late values the converge scripts ask for: secrets and keys that exist only once the program runs."""

from __future__ import annotations

from typing import Callable, Mapping

import pulumi

# A late value's name starts with the part of the program that makes it: `borg/...`, `monitoring/...`.
Maker = Callable[[str], pulumi.Output[str]]


def late_values(names: list[str], makers: Mapping[str, Maker]) -> dict[str, pulumi.Output[str]]:
    """One Output per name, each made once however many hosts need it, by the maker of its prefix."""
    out = {}
    for name in sorted(set(names)):
        prefix = name.split("/", 1)[0]
        if prefix not in makers:
            raise KeyError(f"late value {name!r}: nothing makes values named {prefix}/...; add a maker in __main__.py")
        out[name] = makers[prefix](name)
    return out
