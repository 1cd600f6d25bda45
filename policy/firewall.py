"""The Proxmox datacenter firewall: on whenever VMs have firewalls (Proxmox ignores them while it is off), and still admitting the deployment server."""

from __future__ import annotations

import ipaddress

from pulumi_policy import ReportViolation, StackValidationArgs

from policy.registry import stack_policy
from policy.view import VM, stack_model


# ---------------------------------------------------------------------------------------------------
# VM firewalls that Proxmox would ignore

CLUSTER_FIREWALL = "proxmoxve:cluster/firewallLegacy:FirewallLegacy"
FIREWALL_OPTIONS = "proxmoxve:firewall/optionsLegacy:OptionsLegacy"
FIREWALL_RULES = "proxmoxve:firewall/rulesLegacy:RulesLegacy"
PROXMOX_API_PORT = 8006


def _admits(rules: list, source: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
    for rule in rules:
        if (rule.get("type"), rule.get("action"), rule.get("proto")) != ("in", "ACCEPT", "tcp"):
            continue
        if rule.get("enabled") is False or str(rule.get("dport")) != str(port):
            continue
        try:
            if source in ipaddress.ip_network(str(rule.get("source")), strict=False):
                return True
        except ValueError:
            continue
    return False


@stack_policy(
    "vm-firewalls-take-effect",
    "The datacenter firewall is on whenever VMs have firewalls, and still admits the deployment server.",
)
def vm_firewalls_take_effect(args: StackValidationArgs, report: ReportViolation) -> None:
    vm_firewalls = [
        r for r in args.resources
        if r.resource_type == FIREWALL_OPTIONS and r.props.get("enabled") is True
        or r.resource_type == VM and any((d or {}).get("firewall") is True for d in r.props.get("networkDevices") or [])
    ]
    if not vm_firewalls:
        return
    cluster = [r for r in args.resources if r.resource_type == CLUSTER_FIREWALL]
    if not any(r.props.get("enabled") is True for r in cluster):
        report(
            f"{len(vm_firewalls)} VM firewall resources are set but no {CLUSTER_FIREWALL} is registered with "
            "enabled: true; Proxmox ignores every VM's firewall while the datacenter firewall is off "
            "(components/cluster_firewall.py)",
            vm_firewalls[0].urn,
        )
        return
    # On, it drops what no rule admits: the deployment server must still reach the API and SSH.
    rules = [
        rule
        for r in args.resources
        if r.resource_type == FIREWALL_RULES and not r.props.get("nodeName") and r.props.get("vmId") is None
        and r.props.get("containerId") is None
        for rule in r.props.get("rules") or []
    ]
    source = stack_model().access.deploy.source
    for port, what in ((PROXMOX_API_PORT, "API"), (22, "SSH")):
        if not _admits(rules, source, port):
            report(f"the datacenter firewall would lock this stack's deployment server {source} out of the nodes' "
                   f"{what} (tcp {port}); add it to proxmox.firewall.management", cluster[0].urn)
