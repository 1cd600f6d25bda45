"""Converges one host after its VM exists: the rendered converge script over SSH, through the gateway."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping, Optional

import pulumi
from pulumi_command import remote

from render.converge import fill, late_names, script_digest
from spec import derive
from spec.model import Stack

# A fresh VM needs a while before cloud-init has made the deploy user; keep dialling.
DIAL_ERROR_LIMIT = 60


@dataclass
class HostBootstrapArgs:
    stack: Stack
    host: str
    vm: pulumi.Resource
    """The host's VM; the converge waits for it."""
    private_key: pulumi.Input[str]
    """The deploy key's private half, a Pulumi secret."""
    script: str
    """The host's converge script, rendered before any resource was registered."""
    late: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Values the script's placeholders need (secrets, generated keys); see `render.host.late`."""


class HostBootstrap(pulumi.ComponentResource):
    """Runs the host's converge script as the deploy user; re-runs exactly when the script changes."""

    script_sha256: pulumi.Output[str]
    """sha256 of the converge script: the command's trigger."""
    log: pulumi.Output[str]
    """What the last converge printed."""

    def __init__(self, name: str, args: HostBootstrapArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hypha:infra:HostBootstrap", name, None, opts)
        stack, host = args.stack, args.host
        script = args.script
        digest = script_digest(script)
        user = derive.DEPLOY_USER
        if host == derive.gateway_name(stack):
            connection = remote.ConnectionArgs(
                host=derive.gateway_address(stack), user=user, private_key=args.private_key,
                dial_error_limit=DIAL_ERROR_LIMIT,
            )
        else:
            connection = remote.ConnectionArgs(
                host=str(stack.hosts[host].lan_ip),
                user=user,
                private_key=args.private_key,
                dial_error_limit=DIAL_ERROR_LIMIT,
                proxy=remote.ProxyConnectionArgs(
                    host=derive.gateway_address(stack), user=user, private_key=args.private_key
                ),
            )
        stdin: pulumi.Input[str] = script
        triggers: list = [digest]
        needed = late_names(script)
        if needed:
            values = pulumi.Output.all(**{n: args.late[n] for n in needed})
            # Secret end to end: the filled script and the values' digest (a rotated secret re-runs).
            stdin = pulumi.Output.secret(values.apply(lambda v: fill(script, v)))
            triggers.append(
                pulumi.Output.secret(
                    values.apply(lambda v: hashlib.sha256("\0".join(f"{k}={v[k]}" for k in sorted(v)).encode()).hexdigest())
                )
            )
        command = remote.Command(
            f"{name}-converge",
            connection=connection,
            # The script arrives on stdin: nothing of it lands in a process list or a shell history.
            create="sudo -n sh -s",
            stdin=stdin,
            triggers=triggers,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.vm]),
        )
        self.script_sha256 = pulumi.Output.from_input(digest)
        self.log = command.stdout
        self.register_outputs({"script_sha256": self.script_sha256, "log": self.log})
