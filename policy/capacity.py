"""What the nodes hold: VMs within each node's cores, memory and disks, and VM ids within the stack's range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pulumi_policy import ReportViolation, ResourceValidationArgs, StackValidationArgs

from model.capacity import usage
from policy.registry import resource_policy, stack_policy
from policy.view import VM, stack_model

# ---------------------------------------------------------------------------------------------------
# memory, cores and disk within each node's capacity


@dataclass
class _Asked:
    """What one VM resource asks of its node, in the shape model.capacity.usage reads."""

    node: str
    cores: int
    memory_mb: int
    disk_gb: int
    datastore: Optional[str]


@stack_policy("node-capacity", "VMs' cores, memory and disks fit each Proxmox node.")
def node_capacity(args: StackValidationArgs, report: ReportViolation) -> None:
    proxmox = stack_model().proxmox
    asked = {}
    for r in args.resources:
        if r.resource_type != VM:
            continue
        disks = list(r.props.get("disks") or [])
        asked[r.urn] = _Asked(
            node=str(r.props.get("nodeName")),
            cores=int((r.props.get("cpu") or {}).get("cores") or 1) * int((r.props.get("cpu") or {}).get("sockets") or 1),
            memory_mb=int((r.props.get("memory") or {}).get("dedicated") or 512),
            disk_gb=sum(int(d.get("size") or 0) for d in disks),
            datastore=(disks[0].get("datastoreId") if disks else None) or proxmox.default_datastore,
        )
        if asked[r.urn].node not in proxmox.nodes:
            report(f"{r.props.get('name')} is on node {asked[r.urn].node}, which proxmox.nodes does not list", r.urn)
    for node, u in usage(proxmox, asked).items():
        for key, item in u.items():
            if item.level == "over":
                report(f"node {node}: VMs ask for {item.used} {key} but it offers {item.offered}")


# ---------------------------------------------------------------------------------------------------
# VM ids within the stack's range


@resource_policy("vm-ids-in-range", "VM ids lie in the stack's range.")
def vm_ids_in_range(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != VM:
        return
    ids = stack_model().site.vm_ids
    vm_id = args.props.get("vmId")
    if vm_id is None or not ids.first <= int(vm_id) <= ids.last:
        report(f"vm id {vm_id} is outside this stack's range {ids.first}-{ids.last} (site.vm_ids)")
