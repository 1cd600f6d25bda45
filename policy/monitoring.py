"""What pages keeps paging: a prod stack may shorten an alert's wait, never lengthen a critical one's."""

from __future__ import annotations

import yaml
from pulumi_policy import ReportViolation, StackValidationArgs

from model.types import duration_seconds
from policy.registry import PROD_SCHEMA, stack_policy, tag
from policy.view import hosts, stack_model, with_tag
from render.roles import monitoring as mr

# ---------------------------------------------------------------------------------------------------
# prod's critical alerts wait no longer than their rules say


def _waits(rules_text: str) -> dict[str, tuple[str, str]]:
    """alert -> (severity, for) of a rules file."""
    doc = yaml.safe_load(rules_text) or {}
    return {
        r["alert"]: (r.get("labels", {}).get("severity", ""), str(r.get("for", "0s")))
        for g in doc.get("groups") or [] for r in g.get("rules") or [] if "alert" in r
    }


@stack_policy(
    "prod-critical-alerts-not-delayed",
    "A prod critical alert waits no longer than its rule's own wait: `monitoring.alert_waits` may make "
    "one page sooner, not later (a wait of days is an alert turned off in review's blind spot).",
    config_schema=PROD_SCHEMA,
)
def prod_critical_alerts_not_delayed(args: StackValidationArgs, report: ReportViolation) -> None:
    stack = stack_model()
    if stack.monitoring is None:
        return
    plain = stack.model_copy(update={"monitoring": stack.monitoring.model_copy(update={"alert_waits": {}})})
    own = _waits(mr.rules(plain))
    for view in with_tag(hosts(args.resources), tag(args, "prodTag")):
        carried = view.converge_files.get(mr.RULES_FILE)
        if carried is None:
            continue
        for alert, (severity, wait) in _waits(carried.content).items():
            if severity != "critical" or alert not in own:
                continue
            if duration_seconds(wait) > duration_seconds(own[alert][1]):
                report(
                    f"{alert} is critical and waits {wait} on {view.name}, longer than its rule's {own[alert][1]}: "
                    f"remove or shorten monitoring.alert_waits.{alert}",
                    view.vm.urn,
                )
