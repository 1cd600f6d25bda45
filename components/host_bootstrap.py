"""Converges one host after its VM exists: the rendered converge script over SSH, through the gateway."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping, Optional

import pulumi
from pulumi_command import remote

from render.converge import fill, late_names, script_digest
from render.hostkeys import rotation_script
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
    host_keys: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Pinned `ssh-ed25519 …` public host keys by host (components/host_keys.py): this host's and the gateway's."""
    rotate_from: Optional[pulumi.Input[str]] = None
    """While a host key rotation is configured: the previous pin, the key the host has until it is rotated."""
    after_host_keys: list = field(default_factory=list)
    """Resources whose host key change the connections wait for (the gateway's rotation, for the proxy leg)."""


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
        # Both legs pin a fixed key: pulumi-command 1.2.1 parses `host_key` as an authorized_keys
        # line, checks it with ssh.FixedHostKey and offers only its type in the handshake
        # (provider/pkg/provider/remote/connection.go:85-98); without it, any key is accepted
        # (:96-97). ProxyConnection has the same field (proxyConnection.go:21, connectionBase).
        gateway = derive.gateway_name(stack)

        def connect(pin: pulumi.Input[str]) -> remote.ConnectionArgs:
            if host == gateway:
                return remote.ConnectionArgs(
                    host=derive.gateway_address(stack), user=user, private_key=args.private_key,
                    dial_error_limit=DIAL_ERROR_LIMIT, host_key=pin,
                )
            return remote.ConnectionArgs(
                host=str(stack.hosts[host].lan_ip),
                user=user,
                private_key=args.private_key,
                dial_error_limit=DIAL_ERROR_LIMIT,
                host_key=pin,
                proxy=remote.ProxyConnectionArgs(
                    host=derive.gateway_address(stack), user=user, private_key=args.private_key,
                    host_key=args.host_keys[gateway],
                ),
            )

        connection = connect(args.host_keys[host])
        self.host_key_rotation = self._rotation(name, args, connect) if args.rotate_from is not None else None
        waits = [self.host_key_rotation] if self.host_key_rotation else []
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
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.vm, *waits, *args.after_host_keys]),
        )
        self.script_sha256 = pulumi.Output.from_input(digest)
        self.log = command.stdout
        self.register_outputs({"script_sha256": self.script_sha256, "log": self.log})

    def _rotation(self, name: str, args: HostBootstrapArgs, connect) -> remote.Command:
        """The one-off command of a host key rotation: logged in with the previous pin, it installs the
        current generation's keys (render/hostkeys.rotation_script); the converge then pins the new key."""
        generation = args.stack.hosts[args.host].ssh_host_key_generation
        script = rotation_script(args.host, generation)
        values = pulumi.Output.all(**{n: args.late[n] for n in late_names(script)})
        return remote.Command(
            f"{name}-host-keys-g{generation}",
            connection=connect(args.rotate_from),
            create="sudo -n sh -s",
            stdin=pulumi.Output.secret(values.apply(lambda v: fill(script, v))),
            triggers=[args.host_keys[args.host]],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[args.vm, *args.after_host_keys],
                # It runs once per generation (a new generation is a new resource) and pins the key
                # the host had before: re-run later it would meet the new key and fail. A connection
                # holding a secret shows as changed on every run (pulumi/pulumi-command#447).
                ignore_changes=["connection"],
            ),
        )
