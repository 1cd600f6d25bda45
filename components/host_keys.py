"""Every host's SSH host keys, made by the program (`tls.PrivateKey`) before its VM exists.

Late values (`hostkey/<host>/<type>-private|public`, declared in render/hostkeys.py, made by
components/late.py from these keys) for the converge's managed key files; the same keys go into
the host's cloud-init snippet; the Ed25519 public halves are the pins of every connection
(`host_key` on both legs of HostBootstrap) and the `known_hosts` stack output. Private halves are
Pulumi secrets (pulumi-tls marks `private_key_openssh` secret); public halves are not.

Rotation (README, Host keys): raise `hosts.<n>.ssh_host_key_generation`. The keys of the new
generation are made, and the previous generation's Ed25519 key is kept as long as the counter
stays: HostBootstrap's one-off rotation command logs in pinning the previous key (the one the host
still has), installs the new keys and reloads sshd; the converge then pins the new one. Replacing
a key resource instead (`pulumi up --replace`) would leave nothing to pin the host's old key with:
the converge would refuse the host.
"""

from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_tls as tls

from render import hostkeys
from model.stack import Stack


def key_resource_name(host: str, kind: str, generation: int = 0) -> str:
    """The tls.PrivateKey's name: generation 0 keeps the plain name, later ones a `-g<n>` suffix."""
    return f"ssh-host-{kind}-{host}" + (f"-g{generation}" if generation else "")


class HostKeys(pulumi.ComponentResource):
    """One Ed25519 and one RSA 4096 host key per host of the stack, under one parent."""

    known_hosts: pulumi.Output[str]
    """known_hosts lines for every host: the bastion's public and LAN addresses, every LAN address."""

    def __init__(self, stack: Stack, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hypha:infra:HostKeys", "host-keys", None, opts)
        self.stack = stack
        child = pulumi.ResourceOptions(parent=self)
        self.keys: dict[tuple[str, str], tls.PrivateKey] = {}
        self._previous: dict[str, tls.PrivateKey] = {}
        for host in sorted(stack.hosts):
            generation = stack.hosts[host].ssh_host_key_generation
            for kind in hostkeys.KEY_TYPES:
                extra = {"rsa_bits": hostkeys.RSA_BITS} if kind == hostkeys.RSA else {}
                self.keys[(host, kind)] = tls.PrivateKey(
                    key_resource_name(host, kind, generation), algorithm=kind.upper(), opts=child, **extra
                )
            if generation:
                # The key the host answers with until the rotation command has run (made by an earlier up).
                self._previous[host] = tls.PrivateKey(
                    key_resource_name(host, hostkeys.PIN_TYPE, generation - 1), algorithm=hostkeys.PIN_TYPE.upper(),
                    opts=child,
                )
        pins = pulumi.Output.all(**{h: self.pin(h) for h in sorted(stack.hosts)})
        self.known_hosts = pins.apply(lambda p: hostkeys.known_hosts(stack, p))
        self.register_outputs({"known_hosts": self.known_hosts})

    def key(self, host: str, kind: str) -> tls.PrivateKey:
        """The current key of `kind` of `host`: behind its `hostkey/...` late values (components/late.py)."""
        if (host, kind) not in self.keys:
            raise KeyError(f"host keys: no {kind} key for host {host!r}")
        return self.keys[(host, kind)]

    def pin(self, host: str) -> pulumi.Output[str]:
        """`ssh-ed25519 AAAA…` of `host`: what every client expects it to answer with."""
        return self.keys[(host, hostkeys.PIN_TYPE)].public_key_openssh.apply(hostkeys.pin)

    def previous_pin(self, host: str) -> Optional[pulumi.Output[str]]:
        """The pin of the generation before the current one, while a rotation is configured; else None."""
        key = self._previous.get(host)
        return key.public_key_openssh.apply(hostkeys.pin) if key is not None else None

    def material(self, host: str) -> pulumi.Output[dict]:
        """The host's keys for its cloud-init snippet, by `<type>-private` / `<type>-public`; a secret."""
        values = {}
        for kind in hostkeys.KEY_TYPES:
            key = self.keys[(host, kind)]
            values[f"{kind}-private"] = key.private_key_openssh
            values[f"{kind}-public"] = key.public_key_openssh
        return pulumi.Output.secret(pulumi.Output.all(**values))
