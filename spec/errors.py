"""How config problems are reported: each names its key path and the fix, all of them at once."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(ValueError):
    """Raised before any resource exists; carries every problem found in the stack config."""

    def __init__(self, stack: str, problems: list[Problem]):
        self.stack = stack
        self.problems = sorted(set(problems))
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"stack {stack!r}: {len(self.problems)} problem(s) in the config; nothing was deployed:\n{lines}"
        )


def key_path(prefix: str, loc: tuple) -> str:
    """pydantic's error location as a config key path: `hosts.bw1.roles[1]`."""
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def problems_from(prefix: str, exc: ValidationError) -> list[Problem]:
    """Every pydantic error of one section or entry as a Problem with its key path and fix."""
    problems = []
    for err in exc.errors():
        kind = err["type"]
        if kind == "missing":
            msg = "is required; add it (see the config reference in README.md)"
        elif kind == "extra_forbidden":
            msg = "is not a known key; check its spelling against the config reference in README.md"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "input" in err and kind != "value_error" and not isinstance(err["input"], (dict, list)):
                msg = f"{err['input']!r}: {msg}"
        problems.append(Problem(key_path(prefix, err["loc"]), msg))
    return problems
