"""The bastion: the one VM every SSH connection, by people or by the deployer, goes through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi

from model import derive
from model.stack import Stack

from .proxmox_vm import ProxmoxVm, ProxmoxVmArgs


@dataclass
class GatewayArgs:
    stack: Stack
    pool_id: pulumi.Input[str]
    host_keys: pulumi.Input[Mapping[str, str]]
    """The gateway's SSH host keys (components/host_keys.py), a secret."""


class Gateway(pulumi.ComponentResource):
    """The gateway host's VM plus what people need to use it as their jump host."""

    vm: ProxmoxVm
    """The gateway's VM."""
    address: pulumi.Output[str]
    """Where people and the deployer connect: the public address, else the LAN address (over the VPN)."""
    jump_command: pulumi.Output[str]
    """`ssh -J` command line to reach any LAN host through the gateway."""

    def __init__(self, name: str, args: GatewayArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hypha:infra:Gateway", name, None, opts)
        stack = args.stack
        host = derive.gateway_name(stack)
        self.vm = ProxmoxVm(host, ProxmoxVmArgs(stack, host, args.pool_id, args.host_keys), pulumi.ResourceOptions(parent=self))
        self.address = pulumi.Output.from_input(derive.gateway_address(stack))
        self.jump_command = pulumi.Output.from_input(f"ssh -J <you>@{derive.gateway_address(stack)} <you>@<lan ip>")
        self.register_outputs({"address": self.address, "jump_command": self.jump_command})
