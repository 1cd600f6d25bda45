"""The tier bench (bench/tiers.py) keeps working: its quick mode runs one small file of the program
and files tiers, as the Makefile's targets would, and prints wall and CPU seconds for each. A files
tier test, as its quick mode runs the real checkers of tests/test_wire.py."""

from __future__ import annotations

import re

import pytest

from tests.test_bench_quick import _bench

pytestmark = pytest.mark.files


def test_the_tier_bench_times_each_fast_tier_and_its_cpu_in_quick_mode():
    out = _bench("tiers.py")
    for tier in ("program", "files"):
        m = re.search(rf"^  {tier} +(\d+) passed +(\d+\.\d) s wall +(\d+\.\d) s CPU", out, flags=re.M)
        assert m and int(m.group(1)) > 0 and float(m.group(2)) > 0, out
    assert re.search(r"^  together +\d+\.\d s wall +\d+\.\d s CPU", out, flags=re.M), out
