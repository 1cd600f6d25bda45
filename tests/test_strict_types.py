"""Every config field has a strict type: no bare strings, no coercion, no control characters, no clear secrets.

The bad-input corpus (tests/test_bad_input.py) shows one hostile value per class; these tests hold
the classes for every field at once: every string of the committed config with a line break
appended, and every field of the model typed by model/types.py.
"""

from __future__ import annotations

import copy
import functools
import shutil
import types as pytypes
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from model import types as spec_types
from model.errors import ConfigError
from model.load import ROOT, build_stack, read_stack_config
from model.stack import MAP_SECTIONS, SECTIONS
from model.secrets import SECRET_KEYS, clear_text_secrets_from_engine

pytestmark = pytest.mark.files


@functools.lru_cache(maxsize=None)
def _committed(stack: str) -> dict:
    return read_stack_config(stack)


def _string_leaves(node: Any, path: str) -> Iterator[tuple[str, list]]:
    """(key path as errors print it, route of keys/indices) for every string value in the raw config."""
    if isinstance(node, dict):
        for k, v in node.items():
            for p, route in _string_leaves(v, f"{path}.{k}" if path else str(k)):
                yield p, [k, *route]
    elif isinstance(node, list):
        for i, v in enumerate(node):
            for p, route in _string_leaves(v, f"{path}[{i}]"):
                yield p, [i, *route]
    elif isinstance(node, str):
        yield path, []


def _leaves(stack: str) -> list[tuple[str, list]]:
    return list(_string_leaves(_committed(stack), ""))


def _set(raw: dict, route: list, suffix: str) -> None:
    node = raw
    for part in route[:-1]:
        node = node[part]
    node[route[-1]] += suffix


@pytest.mark.parametrize("stack", ["prod", "staging"])
@pytest.mark.parametrize("suffix", ["\n", "\x00", "\r", "\t", "\x7f", "\x9b"], ids=["LF", "NUL", "CR", "TAB", "DEL", "CSI"])
def test_a_control_character_in_any_string_of_the_config_is_refused_at_its_key_path(stack, suffix):
    leaves = _leaves(stack)
    assert len(leaves) > 80, "the walk must reach every string of the committed config"
    missed = []
    for path, route in leaves:
        raw = copy.deepcopy(_committed(stack))
        _set(raw, route, suffix)
        try:
            build_stack(raw, stack)
        except ConfigError as exc:
            if any(p.path == path for p in exc.problems):
                continue
            missed.append(f"{path}: reported elsewhere: {[str(p) for p in exc.problems]}")
            continue
        missed.append(f"{path}: accepted")
    assert not missed, "\n".join(missed)


def _bare(annotation: Any, where: str) -> Iterator[str]:
    """Places inside a field's type where a str, int, float or bool has no model/types.py type."""
    origin = get_origin(annotation)
    if origin is Annotated:
        if spec_types.kind_of(list(annotation.__metadata__)) is None:
            yield from _bare(get_args(annotation)[0], where)
        return
    if annotation in (str, int, float, bool):
        yield f"{where}: bare {annotation.__name__}"
    elif origin is Literal or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return
    elif origin in (list, dict, Union, pytypes.UnionType):
        for arg in get_args(annotation):
            if arg is not type(None):
                yield from _bare(arg, where)


def _models() -> Iterator[type[BaseModel]]:
    seen: set = set()
    todo = [*SECTIONS.values(), *MAP_SECTIONS.values()]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        yield model
        for field in model.model_fields.values():
            stack = [field.annotation]
            while stack:
                a = stack.pop()
                if isinstance(a, type) and issubclass(a, BaseModel):
                    todo.append(a)
                stack += list(get_args(a))


def test_no_field_of_the_model_is_a_bare_string_number_or_boolean():
    found = []
    for model in _models():
        for name, field in model.model_fields.items():
            if spec_types.kind_of(field.metadata) is not None:
                continue  # a model/types.py type at the top of the field
            found += _bare(field.annotation, f"{model.__name__}.{name}")
    assert not found, "\n".join(found)


def test_every_pattern_matches_the_whole_value_so_a_trailing_newline_never_passes():
    # Text after an otherwise valid value, the way `$` in a pattern would let "\n" through.
    for t, good in ((spec_types.HostName, "web1"), (spec_types.UserName, "alice"), (spec_types.PvePool, "hypha-prod"),
                    (spec_types.Email, "a@hypha.coop"), (spec_types.Domain, "hypha.coop"), (spec_types.Version, "3.10.2")):
        adapter = TypeAdapter(t)
        assert adapter.validate_python(good) == good
        for tail in ("\n", " x", ";x"):
            with pytest.raises(ValidationError):
                adapter.validate_python(good + tail)


def test_a_huge_value_is_quoted_only_as_a_short_prefix():
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(spec_types.Domain).validate_python("a" * 5_000_000)
    message = caught.value.errors()[0]["msg"]
    assert len(message) < 300 and "5000000 characters" in message


def test_a_schedule_that_looks_like_an_option_is_not_read_as_one():
    with pytest.raises(ValidationError, match="is not a systemd calendar event"):
        TypeAdapter(spec_types.CalendarEvent).validate_python("--help")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_calendar_events_are_checked_by_systemds_own_parser():
    adapter = TypeAdapter(spec_types.CalendarEvent)
    # Forms the fallback below would not know, which systemd takes.
    for good in ("Mon..Fri *-*-* 01:15", "*-*-01 04:00:00", "Sat *-*-1..7 18:00", "*:0/15"):
        assert adapter.validate_python(good) == good
    for bad in ("banana", "1:15am", "*-*-* 25:00", "Mon..Xyz 01:00"):
        with pytest.raises(ValidationError, match="systemd-analyze calendar"):
            adapter.validate_python(bad)


def test_without_systemd_analyze_only_the_simple_calendar_forms_are_accepted(monkeypatch):
    monkeypatch.setattr(spec_types.shutil, "which", lambda name: None)
    spec_types._systemd_accepts.cache_clear()
    try:
        adapter = TypeAdapter(spec_types.CalendarEvent)
        for simple in ("*-*-* 01:15", "sun 01:30", "Mon..Fri 06:30", "daily", "03:00:30"):
            assert adapter.validate_python(simple) == simple
        with pytest.raises(ValidationError, match="systemd-analyze is not installed"):
            adapter.validate_python("*-*-01 04:00")
    finally:
        spec_types._systemd_accepts.cache_clear()


def test_the_time_span_type_uses_systemds_parser_too():
    adapter = TypeAdapter(spec_types.TimeSpan)
    assert adapter.validate_python("1h 30min") == "1h 30min"
    with pytest.raises(ValidationError, match="not a systemd time span"):
        adapter.validate_python("5x")


# --- secrets in clear ----------------------------------------------------------------------------


def _stack_dir(tmp_path: Path, extra: str) -> Path:
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / "Pulumi.prod.yaml").write_text((ROOT / "Pulumi.prod.yaml").read_text() + extra)
    return tmp_path


@pytest.mark.parametrize(
    "key",
    ["proxmoxve:apiToken", "hypha-infra:deployPrivateKey", "deployPrivateKey", "hypha-infra:alertSmtpPassword",
     "hypha-infra:pveExporterToken"],
)
def test_a_secret_written_in_clear_in_the_stack_file_is_refused_naming_the_key_and_the_command(tmp_path, key):
    root = _stack_dir(tmp_path, f"  {key}: s3cr3t-in-clear\n")
    with pytest.raises(ConfigError) as caught:
        read_stack_config("prod", root=root)
    (problem,) = caught.value.problems
    # Named by its full config key, as `pulumi config` names it.
    assert problem.path == (key if ":" in key else f"hypha-infra:{key}")
    assert "Pulumi.prod.yaml holds it in clear" in problem.message
    assert f"pulumi config set --secret {key}" in problem.message
    assert "rotate it" in problem.message


def test_a_secret_stored_as_secure_is_accepted(tmp_path):
    root = _stack_dir(tmp_path, "  proxmoxve:apiToken:\n    secure: AAABAJ0k1v5y\n  hypha-infra:deployPrivateKey:\n    secure: AAABAHq\n")
    assert "site" in read_stack_config("prod", root=root)


def test_the_program_and_the_check_agree_on_which_keys_are_secrets():
    from components.config import SECRET_KEYS as program_keys

    assert {f"hypha-infra:{k}" for k in program_keys} | {"proxmoxve:apiToken"} <= SECRET_KEYS


def test_under_the_engine_a_secret_key_that_is_not_secret_is_refused():
    keys = ["hypha-infra:site", "hypha-infra:deployPrivateKey", "proxmoxve:apiToken"]
    problems = clear_text_secrets_from_engine(keys, lambda k: k == "proxmoxve:apiToken")
    assert [p.path for p in problems] == ["hypha-infra:deployPrivateKey"]
    assert "pulumi config set --secret hypha-infra:deployPrivateKey" in problems[0].message


def test_the_program_refuses_a_secret_the_engine_hands_it_in_clear():
    from ops import mockrun

    raw = copy.deepcopy(_committed("prod"))
    raw["deployPrivateKey"] = "-----BEGIN OPENSSH PRIVATE KEY-----\nin-clear\n-----END OPENSSH PRIVATE KEY-----\n"
    # Only the API token is a secret: the deploy key arrives as plain config, as a clear stack entry would.
    with pytest.raises(ConfigError) as caught:
        mockrun.run_stack("prod", raw=raw, secrets={"proxmoxve:apiToken": mockrun.OFFLINE_SECRETS["proxmoxve:apiToken"]})
    assert mockrun.last_run.resources == []
    (problem,) = caught.value.problems
    assert problem.path == "hypha-infra:deployPrivateKey"
    assert "pulumi config set --secret hypha-infra:deployPrivateKey" in problem.message
