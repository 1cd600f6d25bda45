"""`make plan` / `python -m ops.plan` exit codes: distinct, documented, with a JSON error document on failure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from ops import plan
from model.load import ROOT, read_stack_config
import pytest

pytestmark = pytest.mark.program

README = (ROOT / "README.md").read_text()


def _raw_with(mutate):
    def read(stack_name, root=ROOT):
        raw = read_stack_config(stack_name, root)
        mutate(raw)
        return raw

    return read


def _over_capacity(raw):
    raw["hosts"]["loomio"]["memory_mb"] = 10_000_000


def _invalid(raw):
    raw["hosts"]["loomio"]["cores"] = "four"


def test_the_exit_codes_are_distinct():
    assert sorted(plan.EXIT.values()) == [0, 1, 2, 3, 4]


def test_an_invalid_config_exits_1_with_a_json_error_document(monkeypatch, capsys):
    monkeypatch.setattr(plan, "read_stack_config", _raw_with(_invalid))
    assert plan.main(["--stack", "staging", "--json"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["status"] == "invalid_config" and doc["exit_code"] == 1 and doc["stack"] == "staging"
    assert any(p["path"] == "hosts.loomio.cores" for p in doc["problems"])
    assert "hosts.loomio.cores" in captured.err


def test_over_capacity_exits_2_not_the_config_code(monkeypatch, capsys):
    monkeypatch.setattr(plan, "read_stack_config", _raw_with(_over_capacity))
    assert plan.main(["--stack", "staging", "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "over_capacity" and {p["kind"] for p in doc["problems"]} == {"over_capacity"}


def test_over_capacity_and_a_config_mistake_together_is_the_config_code(monkeypatch):
    monkeypatch.setattr(plan, "read_stack_config", _raw_with(lambda raw: (_over_capacity(raw), _invalid(raw))))
    assert plan.main(["--stack", "staging"]) == 1


def test_a_bug_exits_4_with_a_line_saying_so_never_the_config_code(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("gateway")

    monkeypatch.setattr(plan, "build_stack", broken)
    assert plan.main(["--stack", "staging", "--json"]) == 4
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "bug"
    last = captured.err.strip().splitlines()[-1]
    assert "a bug in hypha-infra, not in the config" in last and "exit 4" in last


def test_an_unknown_stack_is_a_config_error():
    assert plan.main(["--stack", "no-such-stack"]) == 1


def test_make_plan_names_the_plans_own_exit_code():
    """make can only exit 0 or 2; the recipe's last line carries ops.plan's code and what it means."""
    result = subprocess.run(
        ["make", "-s", "plan", "STACK=no-such-stack", f"PY={sys.executable}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "make plan: ops.plan exited 1 (invalid config)" in lines, result.stderr
    assert lines[-1].endswith("Error 1"), result.stderr  # make's own line, with the recipe's code


def test_the_readme_documents_every_exit_code():
    section = README[README.index("The exit code"):][:1200]
    for code, meaning in plan.MEANING.items():
        assert re.search(rf"\b{code}\b", section), f"README does not document exit {code} ({meaning})"
    assert "bug" in section and "--json" in section
