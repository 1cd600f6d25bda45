"""What every config model shares: strict models, domain names, email addresses, patterns, per-item list errors."""

from __future__ import annotations

import re
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# The local part in the conservative set every mail system takes (letters, digits, . _ + -), dots
# not leading, trailing or doubled: RFC 5322 also allows ! # $ & ' * / = ? ^ ` { | } ~, which are
# shell and template metacharacters, and no address the co-op uses needs them.
_EMAIL = re.compile(r"[A-Za-z0-9_+-]+(\.[A-Za-z0-9_+-]+)*@[^@\s]+")


def check_domain(value: str) -> str:
    """A fully qualified DNS name in lower case, without a trailing dot."""
    if not isinstance(value, str) or value != value.strip().lower() or value.endswith("."):
        raise ValueError(f"{value!r} is not a valid domain name (write it lower-case, no trailing dot)")
    labels = value.split(".")
    if len(labels) < 2:
        raise ValueError(f"{value!r} is not a valid domain name (it needs at least two labels, e.g. hypha.coop)")
    if len(value) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{value!r} is not a valid domain name (each label is 1-63 lower-case letters, digits or hyphens, "
            "not starting or ending with a hyphen)"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{value!r} is not a valid domain name (the top-level label is numeric)")
    return value


def check_email(value: str) -> str:
    """An address `name@domain`, its domain a valid DNS name."""
    if not isinstance(value, str) or len(value) > 254 or not _EMAIL.fullmatch(value):
        raise ValueError(
            f"{value[:60]!r} is not an email address (write it as name@example.org; the name part of "
            "letters, digits and . _ + -)" if isinstance(value, str) else f"{value!r} is not an email address"
        )
    check_domain(value.rpartition("@")[2])
    return value


def matching(pattern: str, problem: str) -> Callable[[str], str]:
    """A field validator: the whole value must match `pattern`, else `'<value>' <problem>`."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"{value!r} {problem}")
        return value

    return check


def validation_error(title: str, errors: list[tuple[tuple, str, Any]]) -> ValidationError:
    """A ValidationError whose entries (location, message, input) sit at their own sub-keys."""
    details = [
        InitErrorDetails(type=PydanticCustomError("value_error", "{reason}", {"reason": msg}), loc=loc, input=inp)
        for loc, msg, inp in errors
    ]
    return ValidationError.from_exception_data(title, details)


def _check_each(title: str, items: list, check, hint: str = "") -> list:
    """Run `check` on every item and report each failure at its own index (`keys[1]`), not at the list."""
    errors = []
    for i, item in enumerate(items):
        try:
            check(item)
        except ValueError as exc:
            errors.append(((i,), f"{exc}{hint}", item))
    if errors:
        # pydantic prefixes the field's location, so these surface as e.g. people.alice.keys[1].
        raise validation_error(title, errors)
    return items


class _Model(BaseModel):
    # A typo in a key must be an error naming the key, not a silently ignored setting; strict, so a
    # value of the wrong type is refused rather than coerced ("yes" is not true, 1.5 is not 1).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
