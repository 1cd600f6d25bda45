"""Converges one host after its VM exists: the rendered converge script over SSH, through the gateway."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping, Optional

import pulumi
from pulumi_command import remote

from render.converge import fill, late_names, script_digest
from render.hostkeys import rotation_script
from render.readiness import readiness_script
from model import derive
from model.stack import Stack

# A fresh VM needs a while before cloud-init has made the deploy user; keep dialling. pulumi-command
# 1.2.1 (provider/pkg/provider/remote/connection.go) waits 100 ms, x1.5 per try, at most 5 s
# (pulumi sdk util/retry/until.go, used by dialWithRetry :150-187): 60 tries are ~260 s.
DIAL_ERROR_LIMIT = 60
# The bastion leg is dialled with the *proxy's* own limit (connection.go:209-215), default 10, ~11 s
# (connection.go:32, proxyConnection.go:41), not the connection's: set it, so a gateway busy after its
# own converge (sshd reloaded, nftables swapped) does not fail every LAN host at once.
PROXY_DIAL_ERROR_LIMIT = 60


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
    """Values the script's placeholders need (secrets, generated keys); see `render.plan.late`."""
    host_keys: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Pinned `ssh-ed25519 …` public host keys by host (components/host_keys.py): this host's and the gateway's."""
    rotate_from: Optional[pulumi.Input[str]] = None
    """While a host key rotation is configured: the previous pin, the key the host has until it is rotated."""
    after_host_keys: list = field(default_factory=list)
    """Resources whose host key change the connections wait for (the gateway's rotation, for the proxy leg)."""
    gateway: Optional["HostBootstrap"] = None
    """The gateway's HostBootstrap: a LAN host's readiness probe and converge wait for it (required for them)."""


class HostBootstrap(pulumi.ComponentResource):
    """Runs the host's converge script as the deploy user; re-runs exactly when the script changes."""

    script_sha256: pulumi.Output[str]
    """sha256 of the converge script: the command's trigger."""

    def __init__(self, name: str, args: HostBootstrapArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hypha:infra:HostBootstrap", name, None, opts)
        stack, host = args.stack, args.host
        script = args.script
        digest = script_digest(script)
        user = derive.DEPLOY_USER
        gateway = derive.gateway_name(stack)
        is_gateway = host == gateway
        if not is_gateway and args.gateway is None:
            raise ValueError(f"{host}: a LAN host's HostBootstrap needs the gateway's (HostBootstrapArgs.gateway)")
        # Both legs pin a fixed key: pulumi-command 1.2.1 parses `host_key` as an authorized_keys
        # line, checks it with ssh.FixedHostKey and offers only its type in the handshake
        # (provider/pkg/provider/remote/connection.go:85-98); without it, any key is accepted
        # (:96-97). ProxyConnection has the same field (proxyConnection.go:21, connectionBase).

        def to_gateway() -> remote.ConnectionArgs:
            """A LAN host's readiness probe, straight to the gateway with the bastion leg's budget."""
            return remote.ConnectionArgs(
                host=derive.gateway_address(stack), user=user, private_key=args.private_key,
                dial_error_limit=PROXY_DIAL_ERROR_LIMIT, host_key=args.host_keys[gateway],
            )

        def connect(pin: pulumi.Input[str]) -> remote.ConnectionArgs:
            if is_gateway:
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
                    dial_error_limit=PROXY_DIAL_ERROR_LIMIT,
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
        # Order and readiness (render/readiness.py has the provider's and cloud-init's side of it): the
        # gateway converges first; a LAN host's converge then waits for a probe, run on the gateway,
        # that re-dials until the host's sshd accepts the deploy key. The provider's own retry through
        # the bastion never re-dials after a failed handshake, so that one must not fail.
        after: list[pulumi.Resource] = [args.vm, *waits, *args.after_host_keys]
        if not is_gateway:
            ready = remote.Command(
                f"{name}-ready",
                # Straight to the gateway: ssh.Dial re-dials on every try (connection.go:198-201).
                connection=to_gateway(),
                create="sh -s",
                stdin=readiness_script(stack, host),
                # Probed again whenever the converge is about to run again.
                triggers=[digest],
                add_previous_output_in_env=False,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[args.vm, args.gateway, *args.after_host_keys]),
            )
            after += [args.gateway, ready]
        remote.Command(
            f"{name}-converge",
            connection=connection,
            # The script arrives on stdin: nothing of it lands in a process list or a shell history.
            create="sudo -n sh -s",
            stdin=stdin,
            triggers=triggers,
            # Otherwise a re-run sends the last converge's output back as PULUMI_COMMAND_STDOUT/STDERR
            # (commandOutputs.go:51-71), which sshd refuses (no AcceptEnv): a warning on every update.
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=after),
        )
        # No output of this component comes from the command's stdout: a `pulumi refresh` empties it
        # (pulumi/pulumi-command#1377; 1.2.1 has no Read for Command, commandController.go), and the
        # converge's log is in the deployment's own output anyway.
        self.script_sha256 = pulumi.Output.from_input(digest)
        self.register_outputs({"script_sha256": self.script_sha256})

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
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[args.vm, *args.after_host_keys],
                # It runs once per generation (a new generation is a new resource) and pins the key
                # the host had before: re-run later it would meet the new key and fail. A connection
                # holding a secret shows as changed on every run (pulumi/pulumi-command#447).
                ignore_changes=["connection"],
            ),
        )
