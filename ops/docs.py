"""The config reference in README.md: generated from the pydantic models in model/stack.py, nowhere else.

    python -m ops.docs            print the reference
    python -m ops.docs --write    replace the reference block in README.md (`make docs`)
    python -m ops.docs --check    exit 1 when README.md's block differs from the models

Everything in the tables (key, type, default, description) comes from the models' fields, so a
field added or changed in model/stack.py changes the reference and nothing else has to be edited.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import types
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Optional, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from model.load import PROJECT, ROOT
from model.stack import MAP_SECTIONS, SECTIONS, Stack
from model.types import kind_of

README = ROOT / "README.md"
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
FIX_COMMAND = "make docs"

_NAMES: dict[Any, str] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    ipaddress.IPv4Address: "IPv4 address",
    ipaddress.IPv6Address: "IPv6 address",
    ipaddress.IPv4Network: "IPv4 network (CIDR)",
    ipaddress.IPv6Network: "IPv6 network (CIDR)",
}


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without `None`, whether `None` was allowed)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) < len(get_args(annotation)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True
    return annotation, False


def type_name(annotation: Any) -> str:
    """A human-readable name for a field's type, e.g. `list[str]`, `map of name to int`."""
    annotation, _ = _without_none(annotation)
    origin = get_origin(annotation)
    if origin is Annotated:
        # A model/types.py type: its Kind says what the value is (e.g. `email address`).
        return kind_of(list(annotation.__metadata__)) or type_name(get_args(annotation)[0])
    if annotation in _NAMES:
        return _NAMES[annotation]
    if _is_model(annotation):
        return "table (below)"
    if origin is Literal:
        return " or ".join(f"`{v}`" for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        if set(args) == {ipaddress.IPv4Address, ipaddress.IPv6Address}:
            return "IPv4 or IPv6 address"
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        (item,) = get_args(annotation)
        return f"list[{type_name(item)}]"
    if origin is dict:
        _, value = get_args(annotation)
        return f"map of name to {type_name(value)}"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(field: FieldInfo) -> str:
    found: dict[str, Any] = {}
    for meta in field.metadata:
        for attr in ("gt", "ge", "lt", "le", "min_length", "max_length"):
            value = getattr(meta, attr, None)
            if value is not None and isinstance(meta, annotated_types.BaseMetadata):
                found[attr] = value
    if "ge" in found and "le" in found:
        parts = [f"{found.pop('ge')} to {found.pop('le')}"]
    else:
        parts = []
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    for attr, symbol in symbols.items():
        if attr in found:
            parts.append(f"{symbol} {found[attr]}")
    if "min_length" in found:
        parts.append(f"at least {found['min_length']}")
    if "max_length" in found:
        parts.append(f"at most {found['max_length']}")
    return ", ".join(parts)


def field_type(field: FieldInfo) -> str:
    # pydantic moves a top-level Annotated type's metadata (its Kind among it) onto the field.
    name = kind_of(field.metadata) or type_name(field.annotation)
    extra = _constraints(field)
    return f"{name}, {extra}" if extra else name


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        return f"`{_value(field.default_factory())}`"
    if field.default is None:
        return "none"
    return f"`{_value(field.default)}`"


def _cell(text: Optional[str]) -> str:
    # A newline or a pipe would break the table row.
    return " ".join((text or "").split()).replace("|", "\\|")


def _nested(annotation: Any) -> tuple[Optional[type[BaseModel]], str]:
    """The model a field nests (directly, or as the values of a map) and the key suffix it adds."""
    annotation, _ = _without_none(annotation)
    if _is_model(annotation):
        return annotation, ""
    if get_origin(annotation) is dict:
        _, value = get_args(annotation)
        value, _ = _without_none(value)
        if _is_model(value):
            return value, ".<name>"
    return None, ""


def walk(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, type[BaseModel], list[tuple[str, FieldInfo]]]]:
    """Each table of the reference, depth first: (key prefix, model, [(full key, field), ...])."""
    rows = [(f"{prefix}.{name}", field) for name, field in model.model_fields.items()]
    yield prefix, model, rows
    for key, field in rows:
        nested, suffix = _nested(field.annotation)
        if nested is not None:
            yield from walk(nested, key + suffix)


def tables(
    sections: Optional[dict[str, type[BaseModel]]] = None,
    map_sections: Optional[dict[str, type[BaseModel]]] = None,
) -> Iterator[tuple[str, type[BaseModel], list[tuple[str, FieldInfo]]]]:
    """Every table of the reference: the plain sections, then the map sections, each with its nested models."""
    for section, model in (SECTIONS if sections is None else sections).items():
        yield from walk(model, section)
    for section, model in (MAP_SECTIONS if map_sections is None else map_sections).items():
        yield from walk(model, f"{section}.<name>")


def _table(rows: list[tuple[str, FieldInfo]]) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, field in rows:
        lines.append(
            f"| `{key}` | {_cell(field_type(field))} | {_cell(default_text(field))} | {_cell(field.description)} |"
        )
    return lines


def _section_heading(section: str, is_map: bool, entry: type[BaseModel]) -> list[str]:
    declared = Stack.model_fields.get(section)
    required = "required" if declared is None or declared.is_required() else f"optional, default {default_text(declared)}"
    shape = f"a map of name to {entry.__name__.lower()} settings" if is_map else "a table"
    lines = [f"### `{section}`", "", f"Pulumi config key `{PROJECT}:{section}`: {shape}; {required}."]
    if declared is not None and declared.description:
        lines += ["", _cell(declared.description)]
    return lines


def reference(
    sections: Optional[dict[str, type[BaseModel]]] = None,
    map_sections: Optional[dict[str, type[BaseModel]]] = None,
) -> str:
    """The config reference as Markdown. Same models in, same text out."""
    sections = SECTIONS if sections is None else sections
    map_sections = MAP_SECTIONS if map_sections is None else map_sections
    lines = [
        "<!-- Generated from model/stack.py by `python -m ops.docs`; edit the models, then run `make docs`. -->",
        "",
        f"Each section is one Pulumi config key, `{PROJECT}:<section>`, set in `Pulumi.<stack>.yaml` "
        "(or under `config:` in `Pulumi.yaml` for values both stacks share). "
        "Keys are written below as dotted paths inside the section; `<name>` stands for a name you choose "
        "(a person's login, a host name, a service name, a node name). "
        "Unknown keys inside a section are errors, so a typo is reported rather than ignored.",
    ]
    for is_map, group in ((False, sections), (True, map_sections)):
        for section, model in group.items():
            lines += [""] + _section_heading(section, is_map, model)
            for prefix, _, rows in walk(model, f"{section}.<name>" if is_map else section):
                if prefix not in (section, f"{section}.<name>"):
                    lines += ["", f"#### `{prefix}`"]
                lines += [""] + _table(rows)
    return "\n".join(lines) + "\n"


def extract_block(readme: str) -> str:
    """The text between the reference markers in `readme`. ValueError when the markers are missing."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"README.md has no `{START}` ... `{END}` block; add the two markers where the reference goes")
    return readme[start + len(START) : end]


def replace_block(readme: str, text: str) -> str:
    """`readme` with the reference block replaced by `text`."""
    extract_block(readme)  # raises when the markers are missing
    start, end = readme.find(START), readme.find(END)
    return readme[: start + len(START)] + "\n" + text.strip("\n") + "\n" + readme[end:]


def stale(readme: str, text: str) -> Optional[str]:
    """None when `readme` holds `text` as its reference, else a message saying what is wrong and the fix."""
    try:
        block = extract_block(readme)
    except ValueError as exc:
        return str(exc)
    if block.strip("\n") != text.strip("\n"):
        return (
            "README.md's config reference differs from model/stack.py; "
            f"run `{FIX_COMMAND}` and commit README.md"
        )
    return None


def main(argv: Optional[list[str]] = None, readme_path: Path = README) -> int:
    parser = argparse.ArgumentParser(prog="ops.docs", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the reference block in README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md's reference is out of date")
    args = parser.parse_args(argv)
    text = reference()
    if not (args.write or args.check):
        sys.stdout.write(text)
        return 0
    readme = readme_path.read_text(encoding="utf-8") if readme_path.exists() else ""
    if args.check:
        problem = stale(readme, text)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print("README.md's config reference is up to date")
        return 0
    try:
        updated = replace_block(readme, text)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    if updated != readme:
        readme_path.write_text(updated, encoding="utf-8")
        print(f"updated the config reference in {readme_path.name}")
    else:
        print(f"{readme_path.name}'s config reference was already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
