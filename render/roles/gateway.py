"""The gateway role: the SSH bastion every login passes through and the members' WireGuard VPN."""

from __future__ import annotations

from model import derive
from model.stack import Stack

from ..plan import HostPlan, ManagedFile, Role
from ..templates import render

NAME = "gateway"
DEPLOY_ADDRESS_UNIT = "hypha-deploy-address"
DEPLOY_ADDRESS_SCRIPT = "/usr/local/sbin/hypha-deploy-address"


def contribute(stack: Stack, host: str, plan: HostPlan) -> None:
    """The members' WireGuard VPN, forwarding into the LAN, and the deploy address."""
    vpn = stack.network.vpn
    plan.files += [
        ManagedFile(
            "/etc/wireguard/wg0.conf",
            render(
                "gateway/wg0.conf.j2",
                address=derive.vpn_address(stack),
                prefix=vpn.cidr.prefixlen,
                port=vpn.port,
                peers=derive.vpn_peers(stack),
            ),
            mode="0600",
            unit="wg-quick@wg0",
            check="wireguard",
        ),
        ManagedFile(
            "/etc/sysctl.d/90-hypha-forward.conf",
            render("gateway/sysctl-forward.conf.j2"),
            unit="systemd-sysctl",
            action="restart",
        ),
    ]
    # The deploy address (derive.deploy_address) on the LAN interface, before any LAN host's converge:
    # the gateway converges first (components/host_bootstrap.py), then the others through it.
    address = derive.deploy_address(stack)
    plan.files += [
        ManagedFile(
            DEPLOY_ADDRESS_SCRIPT,
            render("gateway/deploy-address.sh.j2", lan_ip=str(stack.hosts[host].lan_ip), address=address),
            mode="0755",
            unit=DEPLOY_ADDRESS_UNIT,
            action="restart",
            check="shell",
        ),
        ManagedFile(
            f"/etc/systemd/system/{DEPLOY_ADDRESS_UNIT}.service",
            render("gateway/deploy-address.service.j2", address=address, script=DEPLOY_ADDRESS_SCRIPT),
            unit=DEPLOY_ADDRESS_UNIT,
            action="restart",
        ),
    ]
    plan.packages += ["wireguard-tools"]
    plan.units += ["wg-quick@wg0", DEPLOY_ADDRESS_UNIT]


ROLE = Role(NAME, contribute, packages=("wireguard-tools",))
