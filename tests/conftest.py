"""Every test file is exactly one tier (pytest.ini's markers): `make test-program`, `make test-files`
and `make test-lab` select by marker, so a file with no tier would run in none of them and a file
with two would run twice. Collection fails naming such a file."""

from __future__ import annotations

import pytest

TIERS = ("program", "files", "lab")


def _tiers_of(module: pytest.Module) -> list[str]:
    # A module's own markers are its `pytestmark`; a test's own decorators do not make a file's tier.
    return [m.name for m in module.own_markers if m.name in TIERS]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = {}
    for item in items:
        module = item.getparent(pytest.Module)
        if module is None or module.nodeid in wrong:
            continue
        tiers = _tiers_of(module)
        if len(tiers) != 1:
            wrong[module.nodeid] = tiers
    if wrong:
        lines = [f"  {path}: {', '.join(t) if t else 'no tier'}" for path, t in sorted(wrong.items())]
        raise pytest.UsageError(
            "every test file needs exactly one tier, a line `pytestmark = pytest.mark.<tier>` near its top "
            f"(one of {', '.join(TIERS)}):\n" + "\n".join(lines)
        )
