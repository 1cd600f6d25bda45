"""How config problems are reported: each names its key path and the fix, all of them at once."""

from __future__ import annotations

from dataclasses import dataclass


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
