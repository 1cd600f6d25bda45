"""Every test file is exactly one tier: a file with no tier marker, or with two, fails collection
(tests/conftest.py), so `make test-program`, `test-files` and `test-lab` together run every test once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model.load import ROOT

pytestmark = pytest.mark.program


def _pytest(tmp_path: Path, files: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """pytest on a project of its own: this one's pytest.ini and conftest, and the given test files
    (name -> the lines between `import pytest` and one passing test)."""
    shutil.copy(ROOT / "pytest.ini", tmp_path / "pytest.ini")
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    for name, body in files.items():
        (tmp_path / "tests" / name).write_text(f"import pytest\n\n{body}\n\n\ndef test_one():\n    pass\n")
    # No plugins from entry points (hypothesis and the like): the samples need none, and loading them costs seconds.
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)


def test_a_file_with_one_tier_is_collected_and_selected_by_it(tmp_path):
    done = _pytest(tmp_path, {"test_a.py": "pytestmark = pytest.mark.files",
                              "test_b.py": "pytestmark = pytest.mark.program"}, "-m", "files")
    assert done.returncode == 0 and "1 passed, 1 deselected" in done.stdout, done.stdout + done.stderr


def test_a_file_with_no_tier_or_two_fails_collection_naming_each(tmp_path):
    done = _pytest(tmp_path, {"test_none.py": "", "test_two.py": "pytestmark = [pytest.mark.program, pytest.mark.lab]",
                              "test_fine.py": "pytestmark = pytest.mark.lab"})
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "passed" not in out, out
    assert "tests/test_none.py: no tier" in out and "tests/test_two.py: program, lab" in out, out
    assert "test_fine.py" not in out, out


def test_a_misspelt_tier_is_refused_by_strict_markers(tmp_path):
    done = _pytest(tmp_path, {"test_typo.py": "pytestmark = pytest.mark.prgram"})
    assert done.returncode != 0
    assert "'prgram' not found in `markers`" in done.stdout + done.stderr


def test_every_test_file_here_declares_its_tier_on_one_line_near_its_top():
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        head = path.read_text().splitlines()[:60]
        marks = [line for line in head if line.startswith("pytestmark = ")]
        assert len(marks) == 1, f"{path.name}: {marks}"
