"""The one way a test finds the real tools it checks with: on PATH or in /usr/sbin (or a lab host's PATH), else a failure saying how to get them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import pytest

from lab.hosts import HOST_ENV, available


def need(tool: str, package: Optional[str] = None) -> str:
    """The path of `tool`; a missing checker fails the test (never skips it), naming the fix."""
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if path is None:
        where = f" (Debian package {package})" if package else ""
        pytest.fail(f"{tool} is missing; run `make setup`{where}")
    return path


def lab_ready(tools: dict[str, str], what: str) -> None:
    """Before a lab fixture boots anything: skip where no lab can run here; fail when a tool the lab's
    hosts run (tool -> Debian package, looked up on a lab host's PATH) is missing, naming the packages."""
    ok, why = available()
    if not ok:
        pytest.skip(f"lab unavailable: {why}")
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool, path=HOST_ENV["PATH"]) is None})
    if missing:
        pytest.fail(f"missing Debian packages for the {what} lab: {' '.join(missing)} (make setup)")


def sshd_runtime_dir() -> None:
    """sshd -t/-T refuse to run without their privilege separation directory, /run/sshd, which systemd
    creates at boot on a real host (RuntimeDirectory=sshd); this machine has no systemd."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
