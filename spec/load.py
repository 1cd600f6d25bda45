"""One way into a validated stack: raw config (from Pulumi config or the stack files) to `Stack`.

`build_stack` serves the Pulumi program (fed from `pulumi.Config`) and `load_stack` serves commands
outside the engine (reading `Pulumi.yaml` + `Pulumi.<stack>.yaml` the way the CLI merges them).
Secret values (`secure:` entries) are never read here; the program reads them as Pulumi secrets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .checks import check
from .errors import ConfigError, Problem, problems_from
from .model import MAP_SECTIONS, SECTIONS, Stack
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


def build_stack(raw: dict[str, Any], stack_name: str) -> Stack:
    """Validate a raw config dict; raise ConfigError listing every problem, each with key path and fix."""
    problems: list[Problem] = []
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
    problems += check(stack_name, declared=declared, **parts)
    if problems:
        raise ConfigError(stack_name, problems)
    return Stack(**{k: v for k, v in parts.items() if v is not None})


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses a key given twice in one map (PyYAML silently keeps the last)."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int):
        super().__init__(f"{key!r} is defined twice (lines {first} and {second}); remove one")
        self.line = second


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise _DuplicateKey(key, seen[key], line)
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path, stack: str) -> dict[str, Any]:
    """Parse one config file; any YAML problem is reported as `<file>:<line>` with what to fix."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError(stack, [Problem(f"{path.name}:{exc.line}", str(exc))]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path.name}:{mark.line + 1}" if mark else path.name
        raise ConfigError(stack, [Problem(where, f"{exc.problem or exc}; fix the YAML syntax there")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(stack, [Problem(path.name, f"{exc}; fix the YAML syntax")]) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(stack, [Problem(path.name, "must be a YAML map with a `config:` key")])
    return data or {}


def _strip(key: str) -> str | None:
    """`hypha-infra:hosts` and `hosts` mean the same; other namespaces (providers) are not ours."""
    if ":" not in key:
        return key
    ns, _, rest = key.partition(":")
    return rest if ns == PROJECT else None


def read_stack_config(stack_name: str, root: Path = ROOT) -> dict[str, Any]:
    """Merge project-level config values (Pulumi.yaml) with the stack file, as the Pulumi CLI does."""
    raw: dict[str, Any] = {}
    project = read_yaml(root / "Pulumi.yaml", stack_name)
    for key, decl in (project.get("config") or {}).items():
        name = _strip(key)
        if name is None:
            continue
        if isinstance(decl, dict) and ("value" in decl or "default" in decl):
            raw[name] = decl.get("value", decl.get("default"))
        elif not isinstance(decl, dict):
            raw[name] = decl
    stack_file = root / f"Pulumi.{stack_name}.yaml"
    if not stack_file.exists():
        raise ConfigError(stack_name, [Problem(stack_file.name, "does not exist; create it or pick another stack")])
    file_config = read_yaml(stack_file, stack_name).get("config") or {}
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
