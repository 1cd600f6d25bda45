"""How config problems are reported: each names its key path and the fix, all of them at once."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

MAX_MESSAGE = 1000
"""Characters of one problem's message: a 50 MB value pasted into a field is never echoed whole."""
MAX_VALUE = 60
"""Characters of a value quoted in a message."""

OVER_CAPACITY = "over_capacity"
"""The kind of a problem that only says a node is too small for its hosts (`make plan` exits 2)."""


def short(value: Any, limit: int = MAX_VALUE) -> str:
    """`repr(value)` cut to about `limit` characters, saying how long the value was."""
    if isinstance(value, (str, bytes)):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value):,} long)"
    # reprlib abbreviates big lists and maps without building their whole repr first.
    return clip(reprlib.repr(value), limit)


def read_bytes(path: Path, limit: int) -> tuple[bytes, Optional[str]]:
    """A config file's bytes, or why not: over `limit` bytes (with its size) or unreadable. The
    stack files and shortlinks.csv share this, so a 50 GB file costs a stat, not a read."""
    try:
        size = path.stat().st_size
        if size > limit:
            return b"", f"the file is {size:,} bytes, over the limit of {limit:,}; is it the right file?"
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        return b"", f"the file cannot be read ({exc.strerror or exc})"
    if len(data) > limit:  # it grew since the stat
        return b"", f"the file is over the limit of {limit:,} bytes; is it the right file?"
    return data, None


def utf8_error(data: bytes, exc: UnicodeDecodeError) -> tuple[int, int, str]:
    """Line and column (1-based, columns in bytes) of the first invalid byte, and the message."""
    line = data.count(b"\n", 0, exc.start) + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return line, column, f"byte 0x{data[exc.start]:02x} is not valid UTF-8; save the file as UTF-8"


def clip(text: str, limit: int = MAX_VALUE) -> str:
    """`text` itself when short, else its first `limit` characters and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    message: str
    kind: str = field(default="config", compare=False)
    """`config`, or OVER_CAPACITY for a node too small for its hosts."""

    def __post_init__(self) -> None:
        for name, limit in (("path", 200), ("message", MAX_MESSAGE)):
            value = getattr(self, name)
            if len(value) > limit:
                object.__setattr__(self, name, f"{value[:limit]}... ({len(value) - limit:,} more characters cut)")

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

    @property
    def over_capacity(self) -> bool:
        """Only capacity is wrong: the config is valid, a node is too small for its hosts."""
        return bool(self.problems) and all(p.kind == OVER_CAPACITY for p in self.problems)


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
                msg = f"{short(err['input'])}: {msg}"
        problems.append(Problem(key_path(prefix, err["loc"]), msg))
    return problems
