"""The loader raises nothing but ConfigError, each naming file:line[:column] or a key path; one spelling per section.

Each case damages a copy of the real stack file (or Pulumi.yaml) in a temporary project directory
and reads it the way `make plan` does; the program-tier cases run the Pulumi program under mocks and
check that nothing was registered.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from ops import mockrun
from model import load
from model.errors import MAX_MESSAGE, OVER_CAPACITY, ConfigError, Problem
from model.load import ROOT, build_stack, load_stack, read_stack_config

pytestmark = pytest.mark.program

STAGING = (ROOT / "Pulumi.staging.yaml").read_bytes()


def line_of(needle: bytes) -> int:
    """The line of the committed staging file a case damages, so the cases follow edits to the file."""
    return STAGING[: STAGING.index(needle)].count(b"\n") + 1


EMAIL_LINE, TLS_LINE = line_of(b"hostmaster"), line_of(b"  hypha-infra:tls:")
ACCESS_LINE, BACKUP_LINE = line_of(b"  hypha-infra:access:"), line_of(b"hypha-infra:backup:")
APPENDED_LINE = STAGING.count(b"\n") + 1
HALF_LINE = STAGING[: len(STAGING) // 2].count(b"\n") + 1


def project(tmp_path: Path, stack_file: bytes, project_file: bytes | None = None) -> Path:
    (tmp_path / "Pulumi.yaml").write_bytes(project_file if project_file is not None else (ROOT / "Pulumi.yaml").read_bytes())
    (tmp_path / "Pulumi.staging.yaml").write_bytes(stack_file)
    return tmp_path


def refused(tmp_path: Path, stack_file: bytes, project_file: bytes | None = None) -> ConfigError:
    root = project(tmp_path, stack_file, project_file)
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        load_stack("staging", root)
    assert time.perf_counter() - started < 2, "refusing a bad file must be fast"
    return caught.value


def only(exc: ConfigError) -> Problem:
    assert len(exc.problems) == 1, str(exc)
    return exc.problems[0]


def _alias_bomb(levels: int = 9) -> bytes:
    out = b'config:\n  hypha-infra:tls:\n    l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
    for i in range(1, levels + 1):
        out += b"    l%d: &l%d [%s]\n" % (i, i, b", ".join([b"*l%d" % (i - 1)] * 9))
    return out


EMAIL = b"email: hostmaster@hypha.coop"

FILE_CASES = [
    ("invalid-utf8", STAGING.replace(b"hostmaster", b"host\xffmaster"), f"Pulumi.staging.yaml:{EMAIL_LINE}:16", "not valid UTF-8"),
    ("nul-byte", STAGING.replace(b"hostmaster", b"host\x00master"), f"Pulumi.staging.yaml:{EMAIL_LINE}:16", "U+0000"),
    ("config-is-a-list", b"config: [1, 2]\n", "Pulumi.staging.yaml:1", "`config:` must be a map"),
    ("file-is-a-list", b"- config\n", "Pulumi.staging.yaml:1", "must be a YAML map"),
    ("int-key", STAGING.replace(b"  hypha-infra:tls:", b"  1: x\n  hypha-infra:tls:"), f"Pulumi.staging.yaml:{TLS_LINE}", "not a string"),
    ("unhashable-key", STAGING.replace(b"  hypha-infra:tls:", b"  ? [a, b]\n  : x\n  hypha-infra:tls:"), f"Pulumi.staging.yaml:{TLS_LINE}", "a key is a list"),
    ("bool-key", STAGING.replace(b"    domain: staging", b"    on: 1\n    domain: staging"), "Pulumi.staging.yaml:7", "is a bool"),
    ("timestamp-tag", STAGING.replace(EMAIL, b"email: !!timestamp 2020-01-01"), f"Pulumi.staging.yaml:{EMAIL_LINE}", "!!timestamp"),
    ("binary-tag", STAGING.replace(EMAIL, b"email: !!binary aGVsbG8="), f"Pulumi.staging.yaml:{EMAIL_LINE}", "!!binary"),
    ("set-tag", STAGING.replace(EMAIL, b"email: !!set {a, b}"), f"Pulumi.staging.yaml:{EMAIL_LINE}", "!!set"),
    ("omap-tag", STAGING.replace(EMAIL, b"email: !!omap [a: 1]"), f"Pulumi.staging.yaml:{EMAIL_LINE}", "!!omap"),
    ("python-tag", STAGING.replace(EMAIL, b"email: !!python/object/apply:os.system [id]"), f"Pulumi.staging.yaml:{EMAIL_LINE}", "!!python/object"),
    ("local-tag", STAGING.replace(EMAIL, b"email: !secret x"), f"Pulumi.staging.yaml:{EMAIL_LINE}", "tag !secret"),
    ("merge-key", STAGING.replace(b"  hypha-infra:tls:\n", b"  hypha-infra:tls:\n    <<: {a: 1}\n"), f"Pulumi.staging.yaml:{TLS_LINE + 1}", "merge keys"),
    ("alias-bomb", _alias_bomb(), "Pulumi.staging.yaml:7", "aliases expand to more than"),
    ("alias-cycle", b"config:\n  hypha-infra:tls: &a\n    x: *a\n", "Pulumi.staging.yaml:3", "refers to the map or list that holds it"),
    ("deep-nesting", b"config:\n  hypha-infra:tls: " + b"[" * 500 + b"]" * 500 + b"\n", "Pulumi.staging.yaml:2", "levels deep"),
    ("huge-int", STAGING.replace(b"first: 8000", b"first: " + b"9" * 5000), "Pulumi.staging.yaml:9", "out of range"),
    ("infinity", STAGING.replace(b"first: 8000", b"first: .inf"), "site.vm_ids.first", "out of range"),
    ("nan", STAGING.replace(b"first: 8000", b"first: .nan"), "site.vm_ids.first", "out of range"),
    ("float-1e308", STAGING.replace(b"first: 8000", b"first: 1.0e+308"), "site.vm_ids.first", "out of range"),
    ("int-beyond-json", STAGING.replace(b"first: 8000", b"first: 99999999999999999999"), "site.vm_ids.first", "out of range"),
    ("too-big", STAGING + b"#" * (load.MAX_FILE_BYTES + 1), "Pulumi.staging.yaml", "over the limit of 4,194,304"),
    ("truncated", STAGING[: len(STAGING) // 2], f"Pulumi.staging.yaml:{HALF_LINE}", "fix the YAML syntax"),
    ("duplicate-key", STAGING + b"  hypha-infra:tls: {}\n", f"Pulumi.staging.yaml:{APPENDED_LINE}", f"lines {TLS_LINE} and {APPENDED_LINE}"),
    # One spelling per section (4): both spellings, and a foreign project prefix.
    ("both-spellings", STAGING + b"  access:\n    admins: [alice]\n", f"Pulumi.staging.yaml:{APPENDED_LINE}", f"as `hypha-infra:access` on line {ACCESS_LINE} and as `access` on line {APPENDED_LINE}"),
    ("misspelt-project-prefix", STAGING.replace(b"hypha-infra:backup:", b"hypha-infa:backup:"), f"Pulumi.staging.yaml:{BACKUP_LINE}", "write `hypha-infra:backup`"),
]


@pytest.mark.parametrize("stack_file, where, words", [pytest.param(*c[1:], id=c[0]) for c in FILE_CASES])
def test_a_damaged_stack_file_is_a_config_error_naming_file_and_line(tmp_path, stack_file, where, words):
    problem = only(refused(tmp_path, stack_file))
    assert problem.path == where, str(problem)
    assert words in problem.message, str(problem)


def test_the_file_tier_cases_cover_the_loaders_limits():
    ids = {c[0] for c in FILE_CASES}
    assert {"alias-bomb", "too-big", "invalid-utf8", "merge-key", "both-spellings", "misspelt-project-prefix"} <= ids


def test_a_misspelt_prefix_in_pulumi_yaml_is_refused_too(tmp_path):
    project_file = (ROOT / "Pulumi.yaml").read_bytes().replace(b"  people:\n", b"  hypha-infar:people:\n")
    problem = only(refused(tmp_path, STAGING, project_file))
    assert problem.path.startswith("Pulumi.yaml:") and "hypha-infar:" in problem.message


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda b: b"\xef\xbb\xbf" + b, id="utf8-bom"),
        pytest.param(lambda b: b.replace(b"\n", b"\r\n"), id="crlf"),
        pytest.param(lambda b: b.replace(b"email: hostmaster@hypha.coop", b"email: hostmaster@hypha.coop # 2020-01-01"), id="comment"),
    ],
)
def test_a_bom_and_crlf_line_ends_read_as_the_same_stack(tmp_path, transform):
    assert read_stack_config("staging", project(tmp_path, transform(STAGING))) == read_stack_config("staging")


def test_provider_namespaces_are_not_foreign_prefixes(tmp_path):
    extra = b"  proxmoxve:apiToken:\n    secure: AAABAKx\n  pulumi:tags:\n    team: infra\n"
    assert read_stack_config("staging", project(tmp_path, STAGING + extra)) == read_stack_config("staging")


def test_an_unquoted_date_stays_text_rather_than_becoming_a_date(tmp_path):
    raw = read_stack_config("staging", project(tmp_path, STAGING.replace(b"search_domain: staging.hypha.coop", b"search_domain: 2020-01-01")))
    assert raw["network"]["search_domain"] == "2020-01-01"


def test_a_50_mb_value_is_never_echoed_whole():
    raw = read_stack_config("staging")
    raw["site"]["vm_ids"]["first"] = "9" * 50_000_000
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        build_stack(raw, "staging")
    assert time.perf_counter() - started < 5
    text = str(caught.value)
    assert "site.vm_ids.first" in text and len(text) < 2_000, text[:300]
    # The value is named by a short prefix and its length, never echoed.
    assert "(50000000 characters)" in text


def test_a_problem_message_is_cut_to_a_bounded_length():
    problem = Problem("x", "y" * 10_000_000)
    assert len(problem.message) < MAX_MESSAGE + 100 and "characters cut" in problem.message


def test_values_from_the_engine_get_the_same_range_checks():
    """The program path: pulumi.Config hands JSON, where 1e999 is inf and Infinity is allowed."""
    raw = read_stack_config("staging")
    raw["site"]["vm_ids"]["first"] = json.loads("1e999")
    raw["proxmox"]["nodes"]["kvm1"]["cores"] = 2**80
    exc = pytest.raises(ConfigError, build_stack, raw, "staging").value
    assert {p.path for p in exc.problems} == {"site.vm_ids.first", "proxmox.nodes.kvm1.cores"}


def test_over_capacity_is_its_own_kind_of_problem():
    raw = read_stack_config("staging")
    raw["hosts"]["loomio"]["memory_mb"] = 10_000_000
    exc = pytest.raises(ConfigError, build_stack, raw, "staging").value
    assert exc.over_capacity and {p.kind for p in exc.problems} == {OVER_CAPACITY}
    raw["hosts"]["loomio"]["cores"] = "four"
    assert not pytest.raises(ConfigError, build_stack, raw, "staging").value.over_capacity


# --- the program as the engine runs it ------------------------------------------------------------


def program_refusal(stack: str, raw: dict, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        mockrun.run_stack(stack, raw=raw, **kwargs)
    assert mockrun.last_run is not None and mockrun.last_run.resources == [], "registered before validation"
    return caught.value


def test_an_empty_hosts_map_registers_nothing():
    raw = read_stack_config("staging")
    raw["hosts"] = {}
    raw["services"] = {}
    for section in ("dns", "monitoring", "backup"):
        raw.pop(section, None)
    exc = program_refusal("staging", raw)
    assert any(p.path == "hosts" and "gateway" in p.message for p in exc.problems), str(exc)


@pytest.mark.parametrize("section", ["hosts", "people", "services"])
def test_an_empty_or_missing_map_section_registers_nothing(section):
    raw = read_stack_config("staging")
    raw[section] = {} if section != "services" else {"x": {}}
    program_refusal("staging", raw)


def test_a_misspelt_project_prefix_handed_by_the_engine_is_refused_by_the_program():
    secrets = dict(mockrun.OFFLINE_SECRETS, **{"hypha-infa:backup": json.dumps({"schedule": "daily"})})
    exc = program_refusal("staging", read_stack_config("staging"), secrets=secrets)
    assert any("hypha-infa:" in p.message and "hypha-infra:backup" in p.message for p in exc.problems), str(exc)


def test_a_misspelt_prefix_in_the_config_environment_is_refused_by_the_program(monkeypatch):
    """The engine may also hand config through PULUMI_CONFIG (pulumi.runtime.config.get_config_env)."""
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"hypha-infra-staging:access": "{}"}))
    exc = program_refusal("staging", read_stack_config("staging"))
    assert any("hypha-infra-staging:access" in p.message for p in exc.problems), str(exc)


def test_a_section_in_both_spellings_is_refused_by_the_program_though_the_engine_keeps_one(tmp_path, monkeypatch):
    """The engine merges `access` and `hypha-infra:access` into one key, so the program reads the stack file."""
    import components.config

    root = project(tmp_path, STAGING + b"  access:\n    admins: [alice]\n")
    monkeypatch.setattr(components.config, "ROOT", root)
    exc = program_refusal("staging", read_stack_config("staging"))
    assert [p.path for p in exc.problems] == [f"Pulumi.staging.yaml:{APPENDED_LINE}"] and f"line {ACCESS_LINE}" in exc.problems[0].message


def test_the_committed_files_pass_the_spelling_check():
    for stack in ("staging", "prod"):
        assert load.spelling_problems(ROOT / f"Pulumi.{stack}.yaml", stack) == []
    assert load.spelling_problems(ROOT / "Pulumi.yaml", "prod") == []


def test_the_temporary_project_has_what_the_loader_reads(tmp_path):
    """The cases above copy only these two files: nothing else in the project is read by the loader."""
    root = project(tmp_path, STAGING)
    shutil.copy(ROOT / "Pulumi.prod.yaml", root)
    assert load_stack("prod", root) == load_stack("prod")


@pytest.mark.parametrize("value", ["hello{", "[1", "", "9" * 5000])
def test_a_section_given_as_plain_text_is_a_config_error_in_the_program(value):
    """The engine hands a plain string as is; pulumi.Config.get_object would raise ConfigTypeError on it."""
    raw = read_stack_config("staging")
    raw["tls"] = value
    exc = program_refusal("staging", raw)
    assert any(p.path.startswith("tls") for p in exc.problems), str(exc)


def test_json_nested_too_deep_for_the_parser_is_a_config_error_in_the_program():
    raw = read_stack_config("staging")
    raw["tls"] = "[" * 100_000 + "]" * 100_000  # json.loads would raise RecursionError
    program_refusal("staging", raw)


def test_an_out_of_range_number_under_an_unknown_section_is_named_like_the_section():
    raw = read_stack_config("staging")
    raw["tsl"] = {"port": float("inf")}
    exc = pytest.raises(ConfigError, build_stack, raw, "staging").value
    assert [p.path for p in exc.problems] == ["hypha-infra:tsl.port"], str(exc)
