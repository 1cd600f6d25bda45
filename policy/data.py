"""What holds data is kept: every prod VM that holds data is protected, backed up and monitored."""

from __future__ import annotations

import re

from pulumi_policy import ReportViolation, StackValidationArgs

from model import derive
from policy.registry import PROD_SCHEMA, stack_policy, tag
from policy.view import BACKUP_JOB, hosts, stack_model, with_tag

NODE_EXPORTER_PORT = 9100

# ---------------------------------------------------------------------------------------------------
# every prod VM that holds data is protected, backed up and monitored


@stack_policy(
    "data-vms-protected-backed-up-monitored", "Every prod VM that holds data is protected, backed up and monitored.",
    config_schema=PROD_SCHEMA,
)
def data_vms_protected_backed_up_monitored(args: StackValidationArgs, report: ReportViolation) -> None:
    stack = stack_model()
    views = hosts(args.resources)
    jobs = [r for r in args.resources if r.resource_type == BACKUP_JOB]
    monitors = with_tag(views, "monitoring")
    # Prometheus's own config only: a host's node_exporter listen address names its own ip:9100 too.
    scraped = "\n".join(
        f.content for m in monitors for path, f in m.converge_files.items() if path.startswith("/etc/prometheus/")
    )
    for view in with_tag(views, tag(args, "prodTag")):
        if view.name not in stack.hosts or not derive.holds_data(stack, view.name):
            continue
        missing = []
        if view.vm.props.get("protection") is not True:
            missing.append("Proxmox protection is off (site.protect_data_vms)")
        if not view.vm.opts.protect:
            missing.append("the VM resource is not `protect`ed in Pulumi")
        if not any(
            job.props.get("all") is True or str(view.vm_id) in [str(x) for x in (job.props.get("vmids") or [])]
            for job in jobs
        ):
            missing.append(f"no {BACKUP_JOB} includes vm id {view.vm_id}")
        files = view.converge_files
        # The borg target backs up no other way than by copying its repositories offsite.
        offsite = "backup_target" in view.tags and any(
            path.startswith("/etc/systemd/system/") and "offsite" in path for path in files
        )
        if not offsite and not any(re.match(r"^/etc/borgmatic(\.d)?/[^/]+\.ya?ml$", path) for path in files):
            missing.append(
                "its converge has no offsite copy (backup.offsite)" if "backup_target" in view.tags
                else "its converge holds no borgmatic config"
            )
        if not monitors:
            missing.append("the stack has no monitoring host")
        elif f"{view.lan_ip}:{NODE_EXPORTER_PORT}" not in scraped:
            missing.append(f"no monitoring host scrapes {view.lan_ip}:{NODE_EXPORTER_PORT}")
        if missing:
            report(f"{view.name} holds data but: {'; '.join(missing)}", view.vm.urn)
