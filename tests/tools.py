"""The one way a test finds the real tool it checks with: on PATH or in /usr/sbin, else a failure saying how to get it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import pytest


def need(tool: str, package: Optional[str] = None) -> str:
    """The path of `tool`; a missing checker fails the test (never skips it), naming the fix."""
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if path is None:
        where = f" (Debian package {package})" if package else ""
        pytest.fail(f"{tool} is missing; run `make setup`{where}")
    return path
