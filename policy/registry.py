"""The pack's one list of policies: each area module registers its rules beside their definitions.

An area module (policy/access.py, policy/network.py, …) decorates each validate function with
`@stack_policy(...)` or `@resource_policy(...)`; `policy/policies.py` imports the areas in the order
the pack serves them and reads `registered()`. Kept free of the rules themselves so every area can
import it without importing the others.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ResourceValidationPolicy,
    StackValidationPolicy,
)

PACK_NAME = "hypha-infra"
# Without a policy config every rule blocks; config.staging.json turns them advisory on staging.
DEFAULT_LEVEL = EnforcementLevel.MANDATORY

_TAGS = {
    "prodTag": {"type": "string", "default": "prod", "description": "VM tag that marks a prod VM."},
    "stagingTag": {"type": "string", "default": "staging", "description": "VM tag that marks a staging VM."},
}
PROD_SCHEMA = PolicyConfigSchema({"prodTag": _TAGS["prodTag"]})
STAGING_SCHEMA = PolicyConfigSchema({"stagingTag": _TAGS["stagingTag"]})


def tag_schema(key: str) -> dict[str, Any]:
    """The config schema entry of `prodTag` or `stagingTag`, for a policy with more config keys."""
    return _TAGS[key]


def tag(args, key: str) -> str:
    """The VM tag that marks prod (`prodTag`) or staging (`stagingTag`) for this policy's config."""
    return str(args.get_config().get(key) or _TAGS[key]["default"])


_REGISTERED: list = []


def _register(policy) -> None:
    if any(p.name == policy.name for p in _REGISTERED):
        raise ValueError(f"policy {policy.name} is registered twice")
    _REGISTERED.append(policy)


def stack_policy(name: str, description: str, config_schema: Optional[PolicyConfigSchema] = None) -> Callable:
    """Register the decorated `validate(args, report)` as a stack policy of the pack."""

    def register(validate: Callable) -> Callable:
        _register(StackValidationPolicy(name, description, validate=validate, config_schema=config_schema))
        return validate

    return register


def resource_policy(name: str, description: str, config_schema: Optional[PolicyConfigSchema] = None) -> Callable:
    """Register the decorated `validate(args, report)` as a resource policy of the pack."""

    def register(validate: Callable) -> Callable:
        _register(ResourceValidationPolicy(name, description, validate=validate, config_schema=config_schema))
        return validate

    return register


def registered() -> list:
    """Every policy registered so far, in registration order (the order the pack serves them)."""
    return list(_REGISTERED)
