"""The layers hold: import-linter's contracts (.importlinter) pass on the repository, and fail when a
module imports against them; and imports stay at the top of modules, where a reader looks for them."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.program

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "render", "components", "policy", "ops", "lab")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# Imports inside functions outside tests/: each one hides a dependency from the top of its module
# (and from the linter's reader). The few left are lazy on purpose (a heavy import a command needs
# only on one path); the figure may only go down.
IMPORTS_IN_FUNCTIONS_BUDGET = 8


def imports_inside_functions(root: Path = ROOT) -> dict[str, int]:
    """file -> number of import statements inside a function body, for every .py outside tests/."""
    out: dict[str, int] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("tests", ".venv") or rel.parts[0].startswith("."):
            continue
        tree = ast.parse(path.read_text(), str(rel))
        count = sum(
            isinstance(node, (ast.Import, ast.ImportFrom))
            for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(fn)
        )
        if count:
            out[str(rel)] = count
    return out


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300)


def test_the_contracts_hold_and_list_no_cycle():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout
    assert result.stdout.count("KEPT") >= 3


def _copy(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


@pytest.mark.parametrize(
    "module, line, contract",
    [
        ("model/errors.py", "import render.quote", "model below render"),
        ("render/quote.py", "import components.config", "model below render"),
        ("policy/view.py", "import components.late", "model below render"),
        ("render/quote.py", "import pulumi", "import no Pulumi SDK"),
        ("render/quote.py", "from render import converge", "no import cycles"),
    ],
)
def test_a_deliberately_wrong_import_breaks_a_contract(tmp_path, module, line, contract):
    root = _copy(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}  # deliberately against the layers\n")
    result = lint(root)
    assert result.returncode != 0
    broken = [l for l in result.stdout.splitlines() if l.endswith("BROKEN")]
    assert any(contract in l for l in broken) or contract in result.stdout.split("Broken contracts", 1)[-1], result.stdout[-3000:]


def test_imports_inside_functions_only_go_down():
    counts = imports_inside_functions()
    total = sum(counts.values())
    assert total <= IMPORTS_IN_FUNCTIONS_BUDGET, f"{total} imports inside functions (budget {IMPORTS_IN_FUNCTIONS_BUDGET}): {counts}"


if __name__ == "__main__":
    counts = imports_inside_functions()
    for name, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"{n:4d}  {name}")
    print(f"{sum(counts.values()):4d}  imports inside functions outside tests/")
