"""Evaluates the policy pack on a mock run in-process, through the SDK's own analyzer, as the engine would.

    python -m ops.policy_check --stack prod [--json] [--baseline state.json]

The engine talks to a policy pack over gRPC: `Configure` with each policy's enforcement level and
properties (resolved from `--policy-pack-config`, where `all` sets every level and a policy's own
entry wins), `Analyze` once per resource with its inputs and options, `AnalyzeStack` once with
every resource, its parent and dependencies. Here the same protobuf requests go to the same
`_PolicyAnalyzerServicer` that `PolicyPack` serves, so the policies get real `PolicyResource` and
args objects, and unknown values or not-applicable answers behave as under `pulumi preview`.
What this cannot see is the engine's diff: replacement is judged against a baseline in the shape
of `pulumi stack export` (here: an earlier run's inputs, written by `export_state`).

Exit 0 when no mandatory policy is violated, 1 for invalid config, 2 for a mandatory violation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from google.protobuf import struct_pb2
from pulumi.runtime import proto
from pulumi.runtime.config import set_all_config
from pulumi_policy import EnforcementLevel
from pulumi_policy.policy import _PolicyAnalyzerServicer

from policy.policies import DEFAULT_LEVEL, PACK_NAME, POLICIES
from model.errors import ConfigError
from model.load import ROOT, read_stack_config

from .mockrun import Run, pulumi_config, run_stack

CONFIG_DIR = ROOT / "policy"
_LEVEL_NAMES = {
    proto.ADVISORY: "advisory",
    proto.MANDATORY: "mandatory",
    proto.REMEDIATE: "remediate",
    proto.DISABLED: "disabled",
}


def policy_config_path(stack: str) -> Path:
    return CONFIG_DIR / f"config.{stack}.json"


def load_policy_config(stack: str) -> dict[str, Any]:
    """The stack's policy config (`policy/config.<stack>.json`), or none: every policy at its default level."""
    path = policy_config_path(stack)
    return json.loads(path.read_text()) if path.exists() else {}


def resolve(config: dict[str, Any], policies=POLICIES) -> dict[str, tuple[EnforcementLevel, dict]]:
    """Per policy (level, properties), as the CLI resolves a policy config before `Configure`."""
    everyone = config.get("all")
    out = {}
    for p in policies:
        entry = config.get(p.name, {})
        if isinstance(entry, str):
            entry = {"enforcementLevel": entry}
        props = {k: v for k, v in entry.items() if k != "enforcementLevel"}
        # Defaults from the policy's schema, as the CLI fills them in.
        if p.config_schema is not None:
            for key, schema in p.config_schema.properties.items():
                if key not in props and "default" in schema:
                    props[key] = schema["default"]
        level = entry.get("enforcementLevel") or everyone or (p.enforcement_level or DEFAULT_LEVEL).value
        out[p.name] = (EnforcementLevel(level), props)
    return out


@dataclass
class Violation:
    policy: str
    level: str
    message: str
    urn: str


@dataclass
class Verdict:
    policy: str
    description: str
    level: str
    violations: list[Violation] = field(default_factory=list)
    not_applicable: Optional[str] = None

    @property
    def status(self) -> str:
        if self.level == "disabled":
            return "disabled"
        if self.violations:
            return f"{len(self.violations)} violation(s)"
        return "not applicable" if self.not_applicable is not None else "pass"


@dataclass
class Report:
    stack: str
    verdicts: list[Verdict]

    @property
    def mandatory_violations(self) -> list[Violation]:
        return [v for x in self.verdicts for v in x.violations if v.level == "mandatory"]

    def verdict(self, policy: str) -> Verdict:
        return next(v for v in self.verdicts if v.policy == policy)

    def as_dict(self) -> dict:
        return {
            "stack": self.stack,
            "passed": not self.mandatory_violations,
            "policies": [
                {
                    "policy": v.policy,
                    "level": v.level,
                    "status": v.status,
                    "not_applicable": v.not_applicable,
                    "violations": [{"message": x.message, "urn": x.urn} for x in v.violations],
                }
                for v in self.verdicts
            ],
        }


def _struct(values: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(json.loads(json.dumps(values)))
    return s


def _options(r) -> proto.AnalyzerResourceOptions:
    return proto.AnalyzerResourceOptions(
        protect=r.protect,
        ignoreChanges=r.ignore_changes,
        deleteBeforeReplace=r.delete_before_replace,
        deleteBeforeReplaceDefined=True,
        parent=r.parent,
    )


@contextmanager
def _env(values: dict[str, Optional[str]]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def evaluate(
    run: Run,
    raw: dict[str, Any],
    config: Optional[dict[str, Any]] = None,
    env: Optional[dict[str, Optional[str]]] = None,
    policies=POLICIES,
) -> Report:
    """Every policy's verdict on `run`, the program's mock run with stack config `raw`.

    `config` is the policy config (default: `policy/config.<stack>.json`); `env` sets variables
    the pack reads (HYPHA_BASELINE, HYPHA_ALLOW_REPLACE) for the evaluation only.
    """
    config = load_policy_config(run.stack) if config is None else config
    # The engine hands the pack the stack's config (PULUMI_CONFIG); the policies read it with pulumi.Config.
    cfg, secret_keys = pulumi_config(raw)
    set_all_config(cfg, secret_keys)
    servicer = _PolicyAnalyzerServicer(PACK_NAME, "0.0.1", policies, DEFAULT_LEVEL)
    levels = resolve(config, policies)
    servicer.Configure(
        proto.ConfigureAnalyzerRequest(
            policyConfig={
                name: proto.PolicyConfig(enforcementLevel=servicer._map_enforcement_level(level), properties=_struct(props))
                for name, (level, props) in levels.items()
            }
        ),
        None,
    )
    diagnostics, not_applicable = [], {}
    with _env(env or {}):
        for r in run.resources:
            response = servicer.Analyze(
                proto.AnalyzeRequest(type=r.type, properties=_struct(r.inputs), urn=r.urn, name=r.name, options=_options(r)),
                None,
            )
            # The engine files a resource policy's violation under the resource analyzed.
            diagnostics += [_with_urn(d, r.urn) for d in response.diagnostics]
            not_applicable.update({n.policy_name: n.reason for n in response.not_applicable})
        response = servicer.AnalyzeStack(
            proto.AnalyzeStackRequest(
                resources=[
                    proto.AnalyzerResource(
                        type=r.type, properties=_struct(r.inputs), urn=r.urn, name=r.name, options=_options(r),
                        parent=r.parent, dependencies=r.dependencies,
                    )
                    for r in run.resources
                ]
            ),
            None,
        )
        diagnostics += response.diagnostics
        not_applicable.update({n.policy_name: n.reason for n in response.not_applicable})
    verdicts = {p.name: Verdict(p.name, p.description, levels[p.name][0].value) for p in policies}
    for d in diagnostics:
        # The SDK puts the description first in the message; the verdict carries it once.
        message = d.message.split("\n", 1)[1] if "\n" in d.message else d.message
        verdicts[d.policyName].violations.append(Violation(d.policyName, _LEVEL_NAMES[d.enforcementLevel], message, d.urn))
    for name, reason in not_applicable.items():
        verdicts[name].not_applicable = reason
    return Report(run.stack, list(verdicts.values()))


def _with_urn(diagnostic, urn: str):
    if not diagnostic.urn:
        diagnostic.urn = urn
    return diagnostic


def export_state(run: Run) -> dict:
    """A run's resources in the shape of `pulumi stack export` (what the replacement policy compares with)."""
    return {
        "version": 3,
        "deployment": {
            "resources": [
                {"urn": r.urn, "type": r.type, "custom": r.custom, "inputs": r.inputs, "protect": r.protect, "parent": r.parent}
                for r in run.resources
            ]
        },
    }


def format_report(report: Report) -> str:
    lines = [f"Policies ({PACK_NAME}, stack {report.stack})"]
    for v in report.verdicts:
        lines.append(f"  {v.policy:<40} {v.level:<10} {v.status}")
        if v.not_applicable and not v.violations:
            lines.append(f"      ({v.not_applicable})")
        for x in v.violations:
            lines.append(f"      {x.level.upper()}: {x.message}")
    n = len(report.mandatory_violations)
    lines.append(f"  {'FAILED: ' + str(n) + ' mandatory violation(s)' if n else 'no mandatory violation'}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:

    parser = argparse.ArgumentParser(prog="ops.policy_check", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--baseline", help="a `pulumi stack export` file: judge replacements against it")
    args = parser.parse_args(argv)
    try:
        raw = read_stack_config(args.stack)
        run = run_stack(args.stack, raw=raw)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    report = evaluate(run, raw, env={"HYPHA_BASELINE": args.baseline} if args.baseline else None)
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    return 2 if report.mandatory_violations else 0


if __name__ == "__main__":
    sys.exit(main())
