"""Every test file is exactly one tier: a file with no tier marker, or with two, fails collection
(tests/conftest.py), so `make test-program`, `test-files` and `test-lab` together run every test once."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model.load import ROOT

pytestmark = pytest.mark.program


def _collect(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "pytest.ini", tmp_path / "pytest.ini")
    (tmp_path / "tests").mkdir(exist_ok=True)
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_sample.py").write_text("import pytest\n\n" + body + "\n\ndef test_one():\n    pass\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_a_file_with_one_tier_is_collected_and_selected_by_it(tmp_path):
    done = _collect(tmp_path, "pytestmark = pytest.mark.files", "-m", "files")
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
    assert "1 deselected" in _collect(tmp_path, "pytestmark = pytest.mark.files", "-m", "program").stdout


def test_a_file_with_no_tier_fails_collection_naming_it(tmp_path):
    done = _collect(tmp_path, "")
    assert done.returncode != 0
    assert "tests/test_sample.py: no tier" in done.stdout + done.stderr


def test_a_file_with_two_tiers_fails_collection_naming_both(tmp_path):
    done = _collect(tmp_path, "pytestmark = [pytest.mark.program, pytest.mark.lab]")
    assert done.returncode != 0
    assert "tests/test_sample.py: program, lab" in done.stdout + done.stderr


def test_a_misspelt_tier_is_refused_by_strict_markers(tmp_path):
    done = _collect(tmp_path, "pytestmark = pytest.mark.prgram")
    assert done.returncode != 0
    assert "'prgram' not found in `markers`" in done.stdout + done.stderr


def test_every_test_file_here_declares_its_tier_on_one_line_near_its_top():
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        head = path.read_text().splitlines()[:60]
        marks = [l for l in head if l.startswith("pytestmark = ")]
        assert len(marks) == 1, f"{path.name}: {marks}"
