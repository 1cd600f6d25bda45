"""Fuzzing the real config: any damage to the stack files, Pulumi.yaml or shortlinks.csv ends in success or a
ConfigError whose every problem names a key path or file:line, never another exception, never a hang.

Hypothesis mutates copies of the committed files: keys deleted and renamed, every leaf set to hostile
values of every type, byte damage, truncation, other encodings, CRLF, BOM, YAML tags, anchors, aliases
and merge keys. What parses is validated (model.load.build_stack) and, when valid, every host is rendered
(render.converge.converge_script), which is what the program does before registering anything. The
full mock program run costs seconds per example, so it gets a few deterministic cases at the end.

Budget: profile `ci` (the default, in `make test`: a few hundred examples, well under a minute) or
`fuzz` (`make fuzz`: thousands). HYPHA_FUZZ_PROFILE picks one. The examples run are printed at the end.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops import mockrun
from render import shortlinks
from render.converge import converge_script
from model.errors import ConfigError
from model.load import KNOWN_SECTIONS, PROJECT, ROOT, build_stack, load_stack, read_stack_config
from model.secrets import SECRET_KEYS

pytestmark = pytest.mark.program

_COMMON = dict(database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Deadlines catch a hang (an alias bomb, a quadratic walk) as a failure of that example; generous,
# as the machine is shared and hypothesis re-runs an example before calling it slow. `make test`
# runs the same examples every time (derandomize: a failure there is reproducible, not flaky);
# `make fuzz` explores new ones on every run.
settings.register_profile("ci", max_examples=60, deadline=timedelta(seconds=10), derandomize=True, **_COMMON)
settings.register_profile("fuzz", max_examples=2000, deadline=timedelta(seconds=20), derandomize=False, **_COMMON)
PROFILE = os.environ.get("HYPHA_FUZZ_PROFILE", "ci")
settings.load_profile(PROFILE)

STACKS = ("staging", "prod")
FILES = {name: (ROOT / name).read_bytes() for name in ("Pulumi.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml", "shortlinks.csv")}
RAW = {stack: read_stack_config(stack) for stack in STACKS}
HOST = "link.hypha.coop"

# Where a problem may point: `file:line[:column]`, or a key path that starts at a config section
# (or an unknown section, reported as `hypha-infra:<key>`).
_FILE_LINE = re.compile(r"(Pulumi(\.[a-z]+)?\.yaml|shortlinks\.csv):\d+(:\d+)?\Z")
_SECTION = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)([.\[]|\Z)")

EXAMPLES: Counter = Counter()
OUTCOMES: Counter = Counter()  # ok / refused: a fuzz that only ever gets refused tests little past the parser


@pytest.fixture(scope="module", autouse=True)
def report_examples(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and EXAMPLES:
        parts = ", ".join(f"{name} {n}" for name, n in sorted(EXAMPLES.items()))
        with capture.global_and_fixture_disabled():  # past -q and output capture: the count is the point
            reporter.write_line(
                f"\nfuzz ({PROFILE} profile): {sum(EXAMPLES.values())} examples ran: {parts}; attempts "
                f"{OUTCOMES['ok']} accepted (and rendered), {OUTCOMES['refused']} refused with located problems"
            )


def located(path: str) -> bool:
    # A secret given in clear is named by its full config key (`proxmoxve:apiToken` too).
    if _FILE_LINE.match(path) or path.startswith(f"{PROJECT}:") or path in SECRET_KEYS:
        return True
    m = _SECTION.match(path)
    return bool(m) and m.group(1) in KNOWN_SECTIONS


def outcome(run: Callable[[], Any]) -> str:
    """Run one attempt: 'ok', or 'refused' after checking every problem is located. Anything else
    (another exception) fails the example, which hypothesis then shrinks to the smallest input."""
    try:
        run()
    except ConfigError as exc:
        assert exc.problems, "a ConfigError with no problem in it"
        for problem in exc.problems:
            assert located(problem.path), f"problem without a key path or file:line: {problem}"
            assert len(problem.message) <= 1100, f"unbounded message at {problem.path}: {problem.message[:200]}..."
        OUTCOMES["refused"] += 1
        return "refused"
    OUTCOMES["ok"] += 1
    return "ok"


def render_all(stack) -> None:
    for name in sorted(stack.hosts):
        converge_script(stack, name)


# --- hostile values ---------------------------------------------------------------------------------

HOSTILE_TEXT = [
    "", " ", "\n", "a\nb", "x\n", "\r\n", "\t", "\x00", "\x1b[31m", "\u202e", "\ufeff", "é", "🦜",
    "$(touch /tmp/fuzz-canary)", "`touch /tmp/fuzz-canary`", ";touch /tmp/fuzz-canary;", "'", '"', "\\",
    "${IFS}", "%s%n", "{{ 7*7 }}", "{% raw %}", "<script>", "../../etc/passwd", "/", "-rf", "--help",
    "*", "~", "a" * 300, "9" * 400, "1:15am", "banana", "null", "true", "0x1F", "1e308", ".inf",
    "hostmaster@hypha.coop\nX: y", "https://x.example/\n", "10.0.2.5", "::1", "0", "-1",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 1, 22, 65535, 65536, 2**31, 2**53, 2**53 + 1, 2**64, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1000, max_size=5000),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=8,
)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into `node` (maps by key, lists by index), interior nodes included."""
    out = []
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return out
    for key, child in items:
        out.append(prefix + (key,))
        out += paths(child, prefix + (key,))
    return out


def _parent(raw: dict, path: tuple):
    node = raw
    for part in path[:-1]:
        node = node[part]
    return node


@st.composite
def damaged_raw(draw, stack: str) -> dict:
    """The stack's real config with one to three keys deleted, renamed, or set to a hostile value."""
    raw = copy.deepcopy(RAW[stack])
    for _ in range(draw(st.integers(1, 3))):
        targets = paths(raw)
        if not targets:
            break
        path = draw(st.sampled_from(targets))
        parent, key = _parent(raw, path), path[-1]
        action = draw(st.sampled_from(["delete", "rename", "set", "set", "set"]))
        if action == "delete":
            del parent[key]
        elif action == "rename" and isinstance(parent, dict):
            new = draw(st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=12)))
            parent[new] = parent.pop(key)
        else:
            parent[key] = draw(values)
    return raw


# --- byte damage --------------------------------------------------------------------------------------

YAML_TAGS = [
    b"!!timestamp 2020-01-01", b"!!binary aGVsbG8=", b"!!set {a, b}", b"!!omap [a: 1]", b"!!pairs [a: 1]",
    b"!!python/object/apply:os.system [id]", b"!!python/name:os.system", b"!local x", b"!!map {a: 1}",
    b"!!seq [1]", b"!!str 1", b"!!int 7", b"!!float .inf", b"!!bool yes", b"!!null ~", b"!!map x",
]
YAML_BITS = [
    b"&a [1, 2]", b"*a", b"*undefined", b"<<: {x: 1}", b"? [a, b]\n  : c", b"{", b"[", b"]", b"'", b'"',
    b"---", b"...", b"%YAML 1.1", b"\t", b"  ", b"#", b":", b"- ", b"|", b">", b"@", b"`", b"\x00", b"\x1b",
    b"\xef\xbb\xbf", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"1e999", b"-.inf", b".nan", b"9" * 60,
]


@st.composite
def damaged_bytes(draw, data: bytes) -> bytes:
    """One to three kinds of damage to a file's bytes, chosen by hypothesis."""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "encoding", "crlf", "bom", "tag", "bits", "lines"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            at = min(at, len(data) - 1)
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        elif kind == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 64)) :]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "encoding":
            codec = draw(st.sampled_from(["utf-16", "utf-16-be", "utf-32", "latin-1", "cp1252", "utf-8-sig"]))
            data = data.decode("utf-8", "replace").replace("a", draw(st.sampled_from(["a", "ä", "€"])), 3).encode(codec, "replace")
        elif kind == "crlf":
            data = data.replace(b"\n", draw(st.sampled_from([b"\r\n", b"\r", b"\n\r"])))
        elif kind == "bom":
            data = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])) + data
        elif kind in ("tag", "bits"):
            # After a `key: ` so the tag or alias lands where a value is parsed.
            spots = [m.end() for m in re.finditer(rb": ", data)] or [at]
            spot = draw(st.sampled_from(spots))
            bit = draw(st.sampled_from(YAML_TAGS if kind == "tag" else YAML_BITS))
            data = data[:spot] + bit + b" " + data[spot:]
        elif kind == "lines":
            lines = data.split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            op = draw(st.sampled_from(["duplicate", "swap", "drop", "indent", "dedent"]))
            if op == "duplicate":
                lines.insert(j, lines[i])
            elif op == "swap":
                lines[i], lines[j] = lines[j], lines[i]
            elif op == "drop":
                del lines[i]
            elif op == "indent":
                lines[i] = b"  " + lines[i]
            else:
                lines[i] = lines[i].lstrip()
            data = b"\n".join(lines)
    return data


@pytest.fixture(scope="module")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="hypha-fuzz-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _project(workdir: Path, replace: dict[str, bytes]) -> Path:
    for name in ("Pulumi.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml"):
        (workdir / name).write_bytes(replace.get(name, FILES[name]))
    return workdir


def _load_and_render(stack: str, root: Path) -> None:
    render_all(load_stack(stack, root))


# --- the properties ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
@given(data=st.data())
def test_a_damaged_stack_file_loads_or_is_refused_with_file_line_or_key_path(workdir, stack, data):
    damaged = data.draw(damaged_bytes(FILES[f"Pulumi.{stack}.yaml"]))
    root = _project(workdir, {f"Pulumi.{stack}.yaml": damaged})
    EXAMPLES[f"stack-file-bytes[{stack}]"] += 1
    outcome(lambda: _load_and_render(stack, root))


@given(data=st.data())
def test_a_damaged_project_file_loads_or_is_refused_with_file_line_or_key_path(workdir, data):
    stack = data.draw(st.sampled_from(STACKS))
    root = _project(workdir, {"Pulumi.yaml": data.draw(damaged_bytes(FILES["Pulumi.yaml"]))})
    EXAMPLES["Pulumi.yaml-bytes"] += 1
    outcome(lambda: _load_and_render(stack, root))


@st.composite
def reshaped_raw(draw, stack: str) -> dict:
    """Another shape of the same stack: optional sections, services and non-gateway hosts dropped
    (with the services on them), as a smaller co-op or a stack being built up would have it."""
    raw = copy.deepcopy(RAW[stack])
    for section in ("dns", "tls", "backup", "monitoring"):
        if section in raw and draw(st.booleans()):
            del raw[section]
    hosts = sorted(n for n, h in raw["hosts"].items() if "gateway" not in h.get("roles", []))
    for name in draw(st.lists(st.sampled_from(hosts), unique=True)) if hosts else []:
        del raw["hosts"][name]
        raw["services"] = {k: v for k, v in raw.get("services", {}).items() if v.get("host") != name}
    services = sorted(raw.get("services", {}))
    for name in draw(st.lists(st.sampled_from(services), unique=True)) if services else []:
        del raw["services"][name]
    return raw


# Deleted, renamed and hostile keys (config-tree), and other shapes of the stack (shape); the
# program hands build_stack the same dict, so this is the program's path short of registering.
CONFIG_MUTATIONS = {"config-tree": damaged_raw, "shape": reshaped_raw}


def as_the_engine_hands_it(raw: dict) -> dict:
    """`raw` through the engine's encoding (mockrun.pulumi_config: JSON for maps, lists and numbers,
    plain strings as they are) and back through components.config, as the program reads it."""
    from components.config import _value

    cfg, _ = mockrun.pulumi_config(raw, secrets={})
    return {k.split(":", 1)[1]: v for k, v in ((k, _value(t)) for k, t in cfg.items()) if v is not None}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("mutation", sorted(CONFIG_MUTATIONS))
@given(data=st.data())
def test_a_mutated_config_validates_and_renders_or_is_refused_with_a_key_path(stack, mutation, data):
    raw = data.draw(CONFIG_MUTATIONS[mutation](stack))
    EXAMPLES[f"{mutation}[{stack}]"] += 1
    outcome(lambda: render_all(build_stack(raw, stack)))
    # The program's view of the same config: refused or accepted alike, never another exception.
    outcome(lambda: render_all(build_stack(as_the_engine_hands_it(raw), stack)))


def _csv_row():
    keyword = st.one_of(st.sampled_from(HOSTILE_TEXT), st.from_regex(r"[a-z0-9][a-z0-9_-]{0,50}", fullmatch=True))
    url = st.one_of(
        st.sampled_from(HOSTILE_TEXT),
        st.builds(lambda p: f"https://x.example/{p}", st.text(max_size=30)),
        st.builds(lambda k: f"https://{HOST}/{k}", st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)),
    )
    return st.tuples(keyword, url)


def _csv_line(row: tuple[str, str]) -> bytes:
    k, u = row
    quote = lambda v: '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n\r') else v  # noqa: E731
    return f"{quote(k)},{quote(u)}\n".encode("utf-8", "surrogatepass")


@given(data=st.data())
def test_a_damaged_shortlinks_csv_renders_or_is_refused_with_its_line(workdir, data):
    text = FILES["shortlinks.csv"] + b"".join(_csv_line(r) for r in data.draw(st.lists(_csv_row(), max_size=6)))
    damaged = data.draw(st.one_of(st.just(text), damaged_bytes(text)))
    path = workdir / "shortlinks.csv"
    path.write_bytes(damaged)
    EXAMPLES["shortlinks.csv"] += 1
    outcome(lambda: shortlinks.render_map(shortlinks.load(path, shortener_host=HOST)))


# --- deterministic program-tier cases: nothing is registered before everything is validated -----------


def _without_hosts(raw: dict) -> None:
    raw["hosts"] = {}
    raw["services"] = {}
    for section in ("dns", "monitoring", "backup"):
        raw.pop(section, None)


def _hostile_leaf(raw: dict) -> None:
    raw["tls"]["email"] = "hostmaster@hypha.coop;touch /tmp/fuzz-canary;"
    raw["site"]["vm_ids"]["first"] = float("inf")


def _deleted_section(raw: dict) -> None:
    del raw["network"]


@pytest.mark.parametrize("mutate", [_without_hosts, _hostile_leaf, _deleted_section], ids=lambda f: f.__name__.strip("_"))
def test_the_program_registers_nothing_for_a_refused_config(mutate):
    raw = copy.deepcopy(RAW["staging"])
    mutate(raw)
    with pytest.raises(ConfigError) as caught:
        mockrun.run_stack("staging", raw=raw)
    assert mockrun.last_run is not None and mockrun.last_run.resources == [], "registered before validation"
    assert all(located(p.path) for p in caught.value.problems), str(caught.value)
    EXAMPLES["program"] += 1


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b.replace(b"handbook.", b"hand\xffbook.", 1), id="invalid-utf8"),
        pytest.param(lambda b: b + b"vote,https://link.hypha.coop/vote\n", id="alias-loop"),
        pytest.param(lambda b: b"\xef\xbb\xbf" + b, id="bom"),
    ],
)
def test_the_program_registers_nothing_for_a_refused_shortlinks_csv(workdir, monkeypatch, damage):
    path = workdir / "shortlinks.csv"
    path.write_bytes(damage(FILES["shortlinks.csv"]))
    monkeypatch.setattr(shortlinks, "CSV_PATH", path)
    with pytest.raises(shortlinks.ShortlinksError) as caught:
        mockrun.run_stack("staging", raw=copy.deepcopy(RAW["staging"]))
    assert mockrun.last_run is not None and mockrun.last_run.resources == [], "registered before the CSV was validated"
    assert all(_FILE_LINE.match(p.path) for p in caught.value.problems), str(caught.value)
    EXAMPLES["program"] += 1


def test_the_unchanged_files_load_and_render_so_the_fuzz_starts_from_valid_input(workdir):
    root = _project(workdir, {})
    for stack in STACKS:
        assert outcome(lambda: _load_and_render(stack, root)) == "ok"
    path = workdir / "shortlinks.csv"
    path.write_bytes(FILES["shortlinks.csv"])
    assert outcome(lambda: shortlinks.render_map(shortlinks.load(path, shortener_host=HOST))) == "ok"
