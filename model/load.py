"""One way into a validated stack: raw config (from Pulumi config or the stack files) to `Stack`.

`build_stack` serves the Pulumi program (fed from `pulumi.Config`) and `load_stack` serves commands
outside the engine (reading `Pulumi.yaml` + `Pulumi.<stack>.yaml` the way the CLI merges them).
Secret values (`secure:` entries) are never read here; the program reads them as Pulumi secrets.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError

from .checks import check
from .errors import ConfigError, Problem, clip, problems_from, read_bytes, utf8_error, short as _short
from .stack import MAP_SECTIONS, SECTIONS, Stack
from .secrets import clear_text_secrets

PROJECT = "hypha-infra"
ROOT = Path(__file__).resolve().parent.parent
KNOWN_SECTIONS = (*SECTIONS, *MAP_SECTIONS)


def _parse(prefix: str, model: type[BaseModel], value: Any, problems: list[Problem]):
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems.extend(problems_from(prefix, exc))
        return None


# Numbers a config value may hold: every count, size and id in the model is far below these, and
# beyond 2**53 a JSON number (the engine hands config as JSON) no longer means one integer.
MAX_INT = 2**53
MAX_FLOAT = 1e15


def value_problems(value: Any, path: str, depth: int = 0) -> list[Problem]:
    """What no field can hold, whatever the model says: numbers out of range (`.inf`, `1e308`, huge
    ints), keys that are not strings, types outside JSON's, nesting beyond the loader's limit."""
    if depth > MAX_DEPTH:
        return [Problem(path, f"nests maps and lists more than {MAX_DEPTH} levels deep; flatten it")]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            return [Problem(path, f"the number {clip(str(value), 30)} is out of range (at most {MAX_INT:,}); correct it")]
        return []
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_FLOAT:
            return [Problem(path, f"the number {value!r} is out of range (at most {MAX_FLOAT:g}); correct it")]
        return []
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in value_problems(item, f"{path}[{i}]", depth + 1)]
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            if not isinstance(key, str):
                out.append(Problem(path, f"the key {_short(key)} is a {type(key).__name__}, not a string; keys are names"))
                continue
            out += value_problems(item, f"{path}.{clip(key, 60)}", depth + 1)
        return out
    return [Problem(path, f"is a {type(value).__name__}; config holds only strings, numbers, booleans, lists and maps")]


def build_stack(raw: dict[str, Any], stack_name: str) -> Stack:
    """Validate a raw config dict; raise ConfigError listing every problem, each with key path and fix."""
    if not isinstance(raw, dict):
        raise ConfigError(stack_name, [Problem("config", f"must be a map of section to settings, not {type(raw).__name__}")])
    # Values no model field could hold are refused first: pydantic would only turn some of them into
    # errors, and a number like 1e308 must not reach arithmetic (capacity sums, address offsets).
    problems: list[Problem] = []
    for key, value in raw.items():
        # Under its section's name, or as `hypha-infra:<key>` like any unknown section.
        where = key if key in KNOWN_SECTIONS else f"{PROJECT}:{clip(key, 60) if isinstance(key, str) else _short(key)}"
        if not isinstance(key, str):
            problems.append(Problem(where, f"the section name {_short(key)} is a {type(key).__name__}, not a string"))
            continue
        problems += value_problems(value, where, 1)
    if problems:
        raise ConfigError(stack_name, problems)
    for key in raw:
        if key not in KNOWN_SECTIONS:
            problems.append(
                Problem(f"{PROJECT}:{key}", f"is not a known config section; check its spelling (known: {', '.join(KNOWN_SECTIONS)})")
            )
    parts: dict[str, Any] = {}
    for key, model in SECTIONS.items():
        if key not in raw:
            if Stack.model_fields[key].is_required():
                problems.append(Problem(key, "is required; add the section (see the config reference in README.md)"))
            parts[key] = None
        else:
            parts[key] = _parse(key, model, raw[key], problems)
    for key, model in MAP_SECTIONS.items():
        entries = raw.get(key, {} if key == "services" else None)
        if entries is None:
            problems.append(Problem(key, "is required; add the section (see the config reference in README.md)"))
            entries = {}
        if not isinstance(entries, dict):
            problems.append(Problem(key, f"must be a map of name to settings, not {type(entries).__name__}"))
            entries = {}
        parsed = {}
        for name, value in entries.items():
            entry = _parse(f"{key}.{name}", model, value, problems)
            if entry is not None:
                parsed[str(name)] = entry
        parts[key] = parsed
    # Names declared, even where the entry failed to parse: a reference to a broken host is not
    # also an "unknown host"; the parse error is the real problem.
    declared = {key: set(map(str, raw.get(key) or {})) if isinstance(raw.get(key), dict) else set() for key in MAP_SECTIONS}
    if raw.get("hosts") == {}:
        # The program would register the provider and the pool before finding no gateway to build.
        problems.append(Problem("hosts", "is empty; a stack needs at least its gateway host (role `gateway`)"))
    problems += check(stack_name, parts, declared)
    if problems:
        raise ConfigError(stack_name, problems)
    return Stack(**{k: v for k, v in parts.items() if v is not None})


# Limits on what one config file may ask of the parser. A stack of 1,000 hosts (bench/stackgen.py)
# is about 0.5 MB; a real one is a few KB. Beyond these the file is refused by name, with its size,
# before it costs memory or time.
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32
"""Nesting of maps and lists: the deepest real key path is 6 levels; PyYAML recurses per level."""
MAX_ALIAS_NODES = 10_000
"""Nodes that aliases (`*name`) may add by expansion, summed over the file: enough for a shared
list or map, while an alias bomb (each level doubling the last) is refused at the first alias over it."""
# The tags of YAML's core schema: anything else (`!!timestamp`, `!!binary`, `!!set`, `!!omap`,
# `!!python/...`, local `!tags`) would hand the model a type it has no rule for.
CORE_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "seq", "map")
)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
MAX_NUMBER_CHARS = 40


class _FileProblem(yaml.YAMLError):
    """A problem at one line of one file, raised from inside the parser."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that accepts only what the model can use, each refusal with its line:

    a key given twice in one map (PyYAML silently keeps the last), keys that are not strings, tags
    outside the core schema, merge keys (`<<`: the reviewer sees one map, the program another),
    nesting deeper than MAX_DEPTH and alias expansion beyond MAX_ALIAS_NODES (alias bombs).
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._open: set[str] = set()  # anchors of the maps and lists being composed
        self._alias_budget = MAX_ALIAS_NODES
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            line = event.start_mark.line + 1
            if event.anchor in self._open:
                raise _FileProblem(line, f"alias *{event.anchor} refers to the map or list that holds it; write the value out")
            if node is not None:
                self._alias_budget -= self._size(node)
                if self._alias_budget < 0:
                    raise _FileProblem(
                        line,
                        f"aliases expand to more than {MAX_ALIAS_NODES} values (at *{event.anchor}); "
                        "write the values out instead of nesting aliases",
                    )
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            line = self.peek_event().start_mark.line + 1
            raise _FileProblem(line, f"nests maps and lists more than {MAX_DEPTH} levels deep; flatten it")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_sequence_node(self, anchor):
        return self._composing(super().compose_sequence_node, anchor)

    def compose_mapping_node(self, anchor):
        return self._composing(super().compose_mapping_node, anchor)

    def _composing(self, compose, anchor):
        # PyYAML registers the anchor before composing the children, so an alias among them would
        # make a cycle that no JSON (the engine's config format) or model can hold.
        if anchor is not None:
            self._open.add(anchor)
        try:
            return compose(anchor)
        finally:
            self._open.discard(anchor)

    def _size(self, node) -> int:
        """Values in `node` once every alias in it is expanded (memoised: linear in the file)."""
        key = id(node)
        if key not in self._sizes:
            if isinstance(node, yaml.MappingNode):
                size = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
            elif isinstance(node, yaml.SequenceNode):
                size = 1 + sum(self._size(v) for v in node.value)
            else:
                size = 1
            self._sizes[key] = size
        return self._sizes[key]

    def construct_object(self, node, deep=False):
        if node.tag not in CORE_TAGS and node.tag != _MERGE_TAG:
            raise _FileProblem(
                node.start_mark.line + 1,
                f"the tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not allowed here; config "
                "holds only strings, numbers, booleans, null, lists and maps (quote the value to keep it as text)",
            )
        if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
            # int() of thousands of digits is slow, and beyond 4,300 a ValueError; no field needs it.
            raise _FileProblem(
                node.start_mark.line + 1,
                f"the number {clip(node.value, 30)} is out of range; correct it",
            )
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError, TypeError, OverflowError):
            # An explicit tag on text it does not fit (`!!int 7 x`, `!!bool maybe`): PyYAML's own
            # constructors raise plain Python errors for these, not YAML errors.
            raise _FileProblem(
                node.start_mark.line + 1,
                f"{clip(str(getattr(node, 'value', '')), 40)!r} is not a valid {node.tag.replace('tag:yaml.org,2002:', '!!')}; "
                "correct the value or drop the tag",
            ) from None


# No implicit timestamps (YAML 1.1): `2021-01-01` stays the text it is, as in YAML 1.2's core schema,
# rather than becoming a date no field accepts. `=` stays a string too (PyYAML's `value` tag).
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == _MERGE_TAG:
            raise _FileProblem(line, "merge keys (`<<`) are not allowed; write the keys out in the map")
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "list" if isinstance(key_node, yaml.SequenceNode) else "map"
            raise _FileProblem(line, f"a key is a {kind}, not a string; keys are names")
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str):
            raise _FileProblem(
                line,
                f"the key {_short(key)} is a {type(key).__name__}, not a string; keys are names "
                "(quote it if it is meant as text)",
            )
        if key in seen:
            raise _FileProblem(line, f"{key!r} is defined twice (lines {seen[key]} and {line}); remove one")
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_text(path: Path, stack: Optional[str], limit: int = MAX_FILE_BYTES) -> str:
    """A config file as text: at most `limit` bytes, UTF-8 (one BOM tolerated), with CRLF line ends
    read as LF; anything else is a ConfigError naming the file (and `line:column` for a bad byte)."""
    data, problem = read_bytes(path, limit)
    if problem:
        raise ConfigError(stack, [Problem(path.name, problem)])
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column, message = utf8_error(data, exc)
        raise ConfigError(stack, [Problem(f"{path.name}:{line}:{column}", message)]) from None
    return text.replace("\r\n", "\n")


def read_yaml(path: Path, stack: str) -> dict[str, Any]:
    """Parse one config file; any problem with it is reported as `<file>:<line>` with what to fix."""
    return _read_yaml_node(path, stack)[0]


@functools.lru_cache(maxsize=8)
def _parsed(text: str) -> tuple[Any, Optional[yaml.Node]]:
    """The document and its node tree; a file is read several times per plan (spelling, then the
    config), and the same text always parses the same way. Callers get a copy of the data."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def _read_yaml_node(path: Path, stack: str) -> tuple[dict[str, Any], Optional[yaml.Node]]:
    text = read_text(path, stack)
    try:
        data, node = _parsed(text)
        data = copy.deepcopy(data)
    except _FileProblem as exc:
        raise ConfigError(stack, [Problem(f"{path.name}:{exc.line}", exc.message)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path.name}:{mark.line + 1 if mark else 1}"
        raise ConfigError(stack, [Problem(where, f"{exc.problem or exc}; fix the YAML syntax there")]) from None
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow (NUL, other control characters): `position` counts characters.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError(
            stack,
            [Problem(f"{path.name}:{line}:{column}", f"holds the control character U+{exc.character:04X}, which YAML does not allow; delete it")],
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(stack, [Problem(f"{path.name}:1", f"{clip(str(exc), 200)}; fix the YAML syntax")]) from None
    if data is not None and not isinstance(data, dict):
        line = node.start_mark.line + 1 if node is not None else 1
        raise ConfigError(stack, [Problem(f"{path.name}:{line}", "must be a YAML map with a `config:` key")])
    return data or {}, node


# Namespaces a stack file may hold besides this project's: the providers the program configures
# (`pulumi config set --secret proxmoxve:apiToken`) and Pulumi's own (`pulumi:tags`).
OTHER_NAMESPACES = frozenset({"proxmoxve", "pulumi", "command", "tls", "random"})


def _strip(key: str) -> str | None:
    """`hypha-infra:hosts` and `hosts` mean the same; other namespaces (providers) are not ours."""
    if ":" not in key:
        return key
    ns, _, rest = key.partition(":")
    return rest if ns == PROJECT else None


def namespace_problem(key: str, where: str) -> Optional[Problem]:
    """A key under a namespace that is neither this project's nor a provider's: a misspelt project
    prefix (`hypha-infa:backup`) would otherwise drop the whole section without a word."""
    ns, sep, rest = key.partition(":")
    if not sep or ns == PROJECT or ns in OTHER_NAMESPACES:
        return None
    return Problem(
        where,
        f"`{clip(key, 80)}` is under `{clip(ns, 40)}:`, which is neither this project (`{PROJECT}:`) nor a "
        f"provider it configures ({', '.join(f'`{n}:`' for n in sorted(OTHER_NAMESPACES))}); "
        f"write `{PROJECT}:{clip(rest, 40)}` or `{clip(rest, 40)}`",
    )


def _key_lines(node: Optional[yaml.Node]) -> dict[str, int]:
    """Line of each key of the file's `config:` map (the parser has refused non-string keys already)."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    for key_node, value in node.value:
        if key_node.value == "config" and isinstance(value, yaml.MappingNode):
            return {k.value: k.start_mark.line + 1 for k, _ in value.value}
    return {}


def _config_map(data: dict[str, Any], file: str, stack: str, node: Optional[yaml.Node]) -> dict[str, Any]:
    config = data.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        line = next((k.start_mark.line + 1 for k, _ in node.value if k.value == "config"), 1) if node else 1
        raise ConfigError(
            stack, [Problem(f"{file}:{line}", f"`config:` must be a map of key to value, not a {type(config).__name__}")]
        )
    return config


def spelling_problems(path: Path, stack: str) -> list[Problem]:
    """Each section given once, in one spelling, under this project: `hypha-infra:access` and
    `access` in one file, or a foreign project prefix, are errors naming both lines / the line."""
    return _spelling_problems(path, stack, *_read_yaml_node(path, stack))


def _spelling_problems(path: Path, stack: str, data: dict[str, Any], node: Optional[yaml.Node]) -> list[Problem]:
    config = _config_map(data, path.name, stack, node)
    lines = _key_lines(node)
    problems: list[Problem] = []
    first: dict[str, str] = {}
    for key in config:
        where = f"{path.name}:{lines.get(key, '?')}"
        foreign = namespace_problem(key, where)
        if foreign is not None:
            problems.append(foreign)
            continue
        name = _strip(key)
        if name is None:
            continue
        if name in first:
            problems.append(
                Problem(
                    where,
                    f"section {name!r} is given twice: as `{first[name]}` on line {lines.get(first[name], '?')} and as "
                    f"`{key}` on line {lines.get(key, '?')} (the engine would keep only one); keep one of them",
                )
            )
            continue
        first[name] = key
    return problems


def read_stack_config(stack_name: str, root: Path = ROOT) -> dict[str, Any]:
    """Merge project-level config values (Pulumi.yaml) with the stack file, as the Pulumi CLI does.

    The result is a function of the two files' bytes, so it is parsed once per content (PyYAML's
    composer is pure Python: ~0.1 s a read, and the tests, the plan and the policies read the same
    files hundreds of times) and each caller gets its own deep copy to change freely. Files too big
    to read, or missing, take the uncached path and its errors.
    """
    files = (root / "Pulumi.yaml", root / f"Pulumi.{stack_name}.yaml")
    try:
        if any(f.stat().st_size > MAX_FILE_BYTES for f in files):
            return _read_stack_config(stack_name, root)
        contents = tuple(f.read_bytes() for f in files)
    except OSError:
        return _read_stack_config(stack_name, root)
    return copy.deepcopy(_read_stack_config_of(stack_name, root, contents))


@functools.lru_cache(maxsize=64)
def _read_stack_config_of(stack_name: str, root: Path, contents: tuple[bytes, ...]) -> dict[str, Any]:
    """`_read_stack_config` cached by the files' contents (the key; read again inside, unchanged
    unless a file changes within this call). Never handed out: callers get copies."""
    return _read_stack_config(stack_name, root)


def _read_stack_config(stack_name: str, root: Path) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    project_file = root / "Pulumi.yaml"
    stack_file = root / f"Pulumi.{stack_name}.yaml"
    if not stack_file.exists():
        raise ConfigError(stack_name, [Problem(stack_file.name, "does not exist; create it or pick another stack")])
    project, project_node = _read_yaml_node(project_file, stack_name)
    stack_data, stack_node = _read_yaml_node(stack_file, stack_name)
    problems = _spelling_problems(project_file, stack_name, project, project_node)
    problems += _spelling_problems(stack_file, stack_name, stack_data, stack_node)
    if problems:
        raise ConfigError(stack_name, problems)
    for key, decl in _config_map(project, project_file.name, stack_name, project_node).items():
        name = _strip(key)
        if name is None:
            continue
        if isinstance(decl, dict) and ("value" in decl or "default" in decl):
            raw[name] = decl.get("value", decl.get("default"))
        elif not isinstance(decl, dict):
            raw[name] = decl
    file_config = _config_map(stack_data, stack_file.name, stack_name, stack_node)
    if leaked := clear_text_secrets(file_config, stack_file.name):
        raise ConfigError(stack_name, leaked)
    for key, value in file_config.items():
        name = _strip(key)
        if name is None or (isinstance(value, dict) and set(value) == {"secure"}):
            continue
        raw[name] = value
    return raw


def load_stack(stack_name: str, root: Path = ROOT) -> Stack:
    return build_stack(read_stack_config(stack_name, root), stack_name)
