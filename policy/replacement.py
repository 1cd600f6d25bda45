"""No prod VM is replaced unless the change says so: the baseline a change is compared with, and the allow path.

A policy sees the resources a change would register, never the engine's diff, so the replace-triggering
inputs are compared with the last deployment's (`pulumi stack export`, named by HYPHA_BASELINE); a
replacement passes when HYPHA_ALLOW_REPLACE or the policy config's `allowReplace` names the VM.
Removing a prod VM that holds data also needs a final backup newer than the last deployment
(prod-data-host-removal).
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Mapping
from typing import Any, Optional

from pulumi_policy import PolicyConfigSchema, ReportViolation, StackValidationArgs

from policy.registry import stack_policy, tag, tag_schema
from policy.view import VM, env_list, stack_model

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


# ---------------------------------------------------------------------------------------------------
# a prod VM that holds data is removed only after a final backup newer than the last change

FINAL_BACKUP_ENV = "HYPHA_FINAL_BACKUP"
# borgmatic names every archive `{hostname}-{now:%Y-%m-%dT%H:%M:%S}` (templates/backup_client/
# borgmatic.yaml.j2, archive_name_format); `{now}` is the client's local time, which is UTC on our
# VMs (Debian's cloud image, no timezone set anywhere).
_ARCHIVE_TIME = r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})"
# A clock a few minutes ahead on the client is not a forged name; an hour is.
FUTURE_SLACK_S = 300


_REMOVAL_SCHEMA = PolicyConfigSchema(
    {
        "finalBackups": {
            "type": "object", "additionalProperties": {"type": "string"},
            "description": f"Host -> the borg archive of its final backup (or set {FINAL_BACKUP_ENV}=host=archive).",
        },
        "baselineFile": {"type": "string", "description": f"`pulumi stack export` file (or set {BASELINE_ENV})."},
        "prodTag": tag_schema("prodTag"),
    }
)


def _deployed_at(args) -> Optional[Any]:
    """When the baseline's deployment ran: `deployment.manifest.time` of `pulumi stack export`
    (pulumi/pulumi sdk/go/common/apitype/core.go: DeploymentV3.Manifest, ManifestV1.Time, required)."""
    path = os.environ.get(BASELINE_ENV) or args.get_config().get("baselineFile")
    with open(path, encoding="utf-8") as fh:
        state = json.load(fh)
    text = str(((state.get("deployment") or state).get("manifest") or {}).get("time") or "")
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def _final_backups(args) -> dict[str, str]:
    """Host -> the archive its admin names as its final backup: `finalBackups` in the policy
    config, or HYPHA_FINAL_BACKUP=host=archive[,host=archive]."""
    named = {str(k): str(v) for k, v in (args.get_config().get("finalBackups") or {}).items()}
    for item in env_list(FINAL_BACKUP_ENV):
        host, sep, archive = item.partition("=")
        if sep:
            named[host] = archive
    return named


def final_backup_problem(host: str, archive: Optional[str], deployed_at, retired_on: list, now) -> Optional[str]:
    """Why `archive` is not a final backup of `host` taken after its last change, or None.

    What can be checked at preview time, offline: the repository is on the backup target, reached
    only over SSH, so the archive's existence is the admin's word (read from `borg list` or the
    restore drill's report) and the reviewer's to see. Its name says which host made it and when;
    the baseline says when the last deployment ran (the one that retired the host's services and
    stopped proxying to them). A backup older than that misses what was written before it.
    """
    how = (f"run a backup on {host} (`systemctl start hypha-backup`), then name its archive in "
           f"policy/config.prod.json (prod-data-host-removal.finalBackups.{host}) or {FINAL_BACKUP_ENV}={host}=<archive>")
    if not archive:
        return f"no final backup is named; {how}"
    match = re.fullmatch(re.escape(host) + "-" + _ARCHIVE_TIME, archive)
    if match is None:
        return (f"{archive!r} is not an archive of {host} (borgmatic names them {host}-YYYY-MM-DDTHH:MM:SS); {how}")
    try:
        taken = datetime.datetime.fromisoformat(match.group(1)).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return f"{archive!r} does not carry a real time; {how}"
    if taken > now + datetime.timedelta(seconds=FUTURE_SLACK_S):
        return f"{archive} is dated in the future ({taken:%Y-%m-%d %H:%M} UTC); {how}"
    if deployed_at is None:
        return (f"the baseline has no deployment time (deployment.manifest.time), so nothing shows {archive} is newer "
                "than the last change; use a `pulumi stack export` of the stack as the baseline")
    if taken <= deployed_at:
        return (f"{archive} is older than the last deployment ({deployed_at:%Y-%m-%d %H:%M:%S} UTC), which changed "
                f"what {host} holds or serves; {how}")
    late = [d for d in retired_on if taken.date() < d]
    if late:
        return f"{archive} is from before its services were retired ({max(late).isoformat()}); {how}"
    return None


@stack_policy(
    "prod-data-host-removal",
    "A prod VM that holds data is removed only with the replacement allow and a final backup newer than the last change.",
    config_schema=_REMOVAL_SCHEMA,
)
def prod_data_host_removal(args: StackValidationArgs, report: ReportViolation) -> None:
    old = _baseline(args)
    if old is None:
        args.not_applicable(f"no baseline: set {BASELINE_ENV} to a `pulumi stack export` file to compare against")
    prod = tag(args, "prodTag")
    present = {r.urn for r in args.resources}
    named = _final_backups(args)
    deployed_at = _deployed_at(args)
    now = datetime.datetime.now(datetime.timezone.utc)
    services = stack_model().services
    for res in sorted(old, key=lambda r: r.get("urn", "")):
        inputs = res.get("inputs") or {}
        if res.get("type") != VM or prod not in (inputs.get("tags") or []) or res["urn"] in present:
            continue
        # Protection is what the program sets on a VM that holds data (derive.protected), and what
        # data-vms-protected-backed-up-monitored holds true on prod.
        if inputs.get("protection") is not True and not res.get("protect"):
            continue
        host = str(inputs.get("name") or res["urn"].rsplit("::", 1)[-1])
        retired_on = [s.retired.date for s in services.values() if s.host == host and s.retired is not None]
        problem = final_backup_problem(host, named.get(host), deployed_at, retired_on, now)
        if problem:
            report(f"prod VM {host} holds data and would be removed: {problem} (the removal also needs "
                   f"{ALLOW_REPLACE_ENV}={host}, prod-vm-no-replacement)", res["urn"])
