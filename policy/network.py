"""What the world reaches: staging VMs sit on the LAN only, with no public address (reached over the VPN)."""

from __future__ import annotations

import ipaddress

from pulumi_policy import ReportViolation, ResourceValidationArgs

from policy.registry import STAGING_SCHEMA, resource_policy, tag
from policy.view import VM, stack_model

# ---------------------------------------------------------------------------------------------------
# staging lives on the VPN


@resource_policy(
    "staging-vpn-only", "Staging VMs have no public address and no bridge but the LAN's.", config_schema=STAGING_SCHEMA,
)
def staging_vpn_only(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != VM or tag(args, "stagingTag") not in list(args.props.get("tags") or []):
        return
    net = stack_model().network
    for dev in args.props.get("networkDevices") or []:
        if dev.get("bridge") != net.lan_bridge:
            report(f"staging VM on bridge {dev.get('bridge')}; staging VMs sit on the LAN bridge {net.lan_bridge} only")
    for cfg in (args.props.get("initialization") or {}).get("ipConfigs") or []:
        v4 = (cfg or {}).get("ipv4") or {}
        v6 = (cfg or {}).get("ipv6") or {}
        if v4.get("address") and ipaddress.ip_interface(v4["address"]).ip not in net.lan_cidr:
            report(f"staging VM has address {v4['address']} outside the LAN {net.lan_cidr}; staging is reached over the VPN")
        if v6.get("address"):
            report(f"staging VM has IPv6 address {v6['address']}; staging has no public address")
