"""No prod VM is replaced unless the change says so: the baseline a change is compared with, and the allow path.

A policy sees the resources a change would register, never the engine's diff, so the replace-triggering
inputs are compared with the last deployment's (`pulumi stack export`, named by HYPHA_BASELINE); a
replacement passes when HYPHA_ALLOW_REPLACE or the policy config's `allowReplace` names the VM.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Optional

from pulumi_policy import PolicyConfigSchema, ReportViolation, StackValidationArgs

from policy.registry import stack_policy, tag, tag_schema
from policy.view import VM, env_list

ALLOW_REPLACE_ENV = "HYPHA_ALLOW_REPLACE"
BASELINE_ENV = "HYPHA_BASELINE"

_REPLACE_SCHEMA = PolicyConfigSchema(
    {
        "allowReplace": {"type": "array", "items": {"type": "string"}, "description": "Prod VMs this change may replace."},
        "baselineFile": {"type": "string", "description": f"`pulumi stack export` file (or set {BASELINE_ENV})."},
        "prodTag": tag_schema("prodTag"),
    }
)

# ---------------------------------------------------------------------------------------------------
# no replacement of a prod VM without an explicit allow flag

# VmLegacy inputs whose change makes the Proxmox provider (bpg) destroy and re-create the VM.
REPLACE_FIELDS = ("vmId", "nodeName", "clone", "initialization.userDataFileId")


def _at(props: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(props, Mapping):
            return None
        props = props.get(part)
    return _plain(props)


def _plain(value: Any) -> Any:
    """JSON-comparable: the wire's floats and an export's ints compare equal."""
    if isinstance(value, Mapping):
        return {k: _plain(value[k]) for k in value}
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and hasattr(value, "__getitem__") and not isinstance(value, str)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return value


def replacements(old_resources: list[dict], new_resources: list, prod_tag: str = "prod") -> list[tuple[str, str, str]]:
    """(vm name, urn, why) for every prod VM of the baseline the new resources would replace or delete."""
    new = {r.urn: r for r in new_resources}
    out = []
    for old in old_resources:
        inputs = old.get("inputs") or {}
        if old.get("type") != VM or prod_tag not in (inputs.get("tags") or []):
            continue
        name = str(inputs.get("name") or old["urn"].rsplit("::", 1)[-1])
        cur = new.get(old["urn"])
        if cur is None:
            out.append((name, old["urn"], "its resource is gone (deleted, or renamed: a new URN is a new VM)"))
            continue
        ignored = set(cur.opts.ignore_changes or [])
        changed = [f for f in REPLACE_FIELDS if f not in ignored and _at(inputs, f) != _at(cur.props, f)]
        if changed:
            out.append((name, old["urn"], f"{', '.join(changed)} changed, which replaces the VM"))
    return out


def _baseline(args) -> Optional[list[dict]]:
    path = os.environ.get(BASELINE_ENV) or args.get_config().get("baselineFile")
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        state = json.load(fh)
    return list((state.get("deployment") or state).get("resources") or [])


@stack_policy(
    "prod-vm-no-replacement", "No prod VM is replaced unless the change says so explicitly.",
    config_schema=_REPLACE_SCHEMA,
)
def prod_vm_no_replacement(args: StackValidationArgs, report: ReportViolation) -> None:
    old = _baseline(args)
    if old is None:
        args.not_applicable(f"no baseline: set {BASELINE_ENV} to a `pulumi stack export` file to compare against")
    allowed = set(env_list(ALLOW_REPLACE_ENV)) | {str(x) for x in args.get_config().get("allowReplace") or []}
    for name, urn, why in sorted(replacements(old, args.resources, tag(args, "prodTag"))):
        if name in allowed:
            continue
        report(f"prod VM {name}: {why}; if that is intended, run with {ALLOW_REPLACE_ENV}={name}", urn)
