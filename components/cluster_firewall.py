"""The Proxmox datacenter firewall: on, dropping inbound to the nodes but for their management.

Proxmox applies a VM's firewall options and rules (components/proxmox_vm.py) only while the
datacenter-level firewall is enabled, and leaves it off on a fresh install. It is one object for
the whole cluster, and both stacks declare it from the same config (`proxmox.firewall`, held equal
by tests/test_program.py), so neither undoes the other. Deleting the resource (destroying a stack)
leaves the firewall as it is: the provider's delete only forgets it
(bpg/terraform-provider-proxmox proxmoxtf/resource/cluster/firewall/firewall.go:229-233, firewallDelete,
at d6bd1ffe). The cluster-level rules are one list per cluster too: the provider's update deletes
every rule past the ones declared (proxmoxtf/resource/firewall/rules.go:549-566), which is why they
come only from that shared config.
"""

from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_proxmoxve as pve

from model import derive
from model.stack import Stack


class ClusterFirewall(pulumi.ComponentResource):
    """`pve.cluster.FirewallLegacy` enabled, with its rules. That class is the provider's
    proxmox_virtual_environment_cluster_firewall (type token proxmoxve:cluster/firewallLegacy:FirewallLegacy,
    pulumi_proxmoxve 8.6.0 cluster/firewall_legacy.py:231-232; inputs enabled, input_policy,
    output_policy, forward_policy, ebtables, log_ratelimit)."""

    enabled: pulumi.Output[bool]
    """Whether the datacenter firewall is on (always true: a stack that needs it off is refused)."""

    def __init__(self, name: str, stack: Stack, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hypha:infra:ClusterFirewall", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        options = pve.cluster.FirewallLegacy(
            f"{name}-options",
            enabled=True,
            # The nodes' own inbound (and the default for what no rule names): only the rules below
            # and Proxmox's built-in ones for the cluster network get through.
            input_policy="DROP",
            output_policy="ACCEPT",
            # Routed traffic is each VM's firewall's business; a DROP here would cut the LAN's NAT.
            forward_policy="ACCEPT",
            ebtables=True,
            opts=child,
        )
        rules = derive.cluster_firewall_rules(stack)
        if rules:
            # No node_name and no vm_id: the cluster-level rule list (the provider's docs for
            # `RulesLegacyArgs`: "Leave empty for cluster level rules").
            pve.firewall.RulesLegacy(
                f"{name}-rules",
                rules=[
                    pve.firewall.RulesLegacyRuleArgs(
                        type="in", action="ACCEPT", proto=r.proto, dport=str(r.port), source=r.source,
                        comment=r.comment, enabled=True,
                    )
                    for r in rules
                ],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[options]),
            )
        self.enabled = options.enabled
        self.register_outputs({"enabled": self.enabled})
