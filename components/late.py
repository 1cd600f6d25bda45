"""Makes the late values the converge scripts ask for (secrets and keys that exist only once the
program runs), from the roles' declarations alone (`Role.late`, render/plan.py's LateValue).

Each name is matched against the declarations (exactly one must match it, or it is an error naming
it) and made by its declaration's kind:

  random-password      a RandomPassword of 48 letters and digits, a secret
  ssh-keypair-private  an Ed25519 tls.PrivateKey's OpenSSH private half, a secret
  ssh-keypair-public   the public half of the same key (one line), where `resource` names the same one
  config-secret        the Pulumi config secret `source`, through `encode(stack, text)` when given
  host-key-private     a host key components/host_keys.py made (its component `parent` holds them)
  host-key-public      its public half as tls writes it
  rsa-keypair-private  an RSA 2048 tls.PrivateKey's private half (PEM), a secret (a DKIM signing key)
  rsa-keypair-public   the public half of the same key (PEM), through `encode(stack, pem)` when given

Generated resources are named by the declaration (`resource`, filled from the pattern's groups) and
sit under the component `parent`: those names are the resources' URNs, so they must not change.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Mapping

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from model.load import PROJECT
from model.stack import Stack
from render.plan import LateValue

PASSWORD_LENGTH = 48
# RFC 8301 asks for at least 1024 bits of a DKIM key and suggests 2048, what every large receiver verifies.
RSA_BITS = 2048


class LateValues:
    """The late values of one program run: each made once however many hosts need it."""

    def __init__(self, stack: Stack, declarations: Iterable[LateValue], components: Mapping[str, pulumi.Resource]):
        self.stack = stack
        self.declarations = list(dict.fromkeys(declarations))  # a declaration two roles share counts once
        self.components = components
        for d in self.declarations:
            problem = _declaration_problem(d, components)
            if problem:
                raise ValueError(f"late value declaration {d.pattern!r} ({d.kind}): {problem}")
        self._values: dict[str, pulumi.Output[str]] = {}
        self._resources: dict[str, pulumi.CustomResource] = {}

    def declaration(self, name: str) -> tuple[LateValue, dict[str, str]]:
        """The one declaration matching `name`, and its pattern's groups."""
        found = [(d, m.groupdict()) for d in self.declarations if (m := re.fullmatch(d.pattern, name))]
        if not found:
            raise KeyError(f"late value {name!r}: no role declares it (Role.late in render/roles/)")
        if len(found) > 1:
            raise KeyError(f"late value {name!r}: declared more than once ({', '.join(d.pattern for d, _ in found)})")
        return found[0]

    def value(self, name: str) -> pulumi.Output[str]:
        if name not in self._values:
            decl, groups = self.declaration(name)
            self._values[name] = KINDS[decl.kind](self, decl, groups)
        return self._values[name]

    def values(self, names: Iterable[str]) -> dict[str, pulumi.Output[str]]:
        """One Output per name, sorted by name."""
        return {name: self.value(name) for name in sorted(set(names))}

    def _resource(self, decl: LateValue, groups: dict[str, str], make: Callable[[str, pulumi.ResourceOptions], pulumi.CustomResource]):
        """The resource `decl` names, made once: a private and a public half share it. Without a
        `parent` it is a top-level resource (a role whose values no component holds, e.g. mail's)."""
        name = decl.resource.format(**groups)
        if name not in self._resources:
            parent = self.components[decl.parent] if decl.parent is not None else None
            self._resources[name] = make(name, pulumi.ResourceOptions(parent=parent))
        return self._resources[name]

    def _key(self, decl: LateValue, groups: dict[str, str]) -> tls.PrivateKey:
        return self._resource(decl, groups, lambda name, opts: tls.PrivateKey(name, algorithm="ED25519", opts=opts))

    def _rsa_key(self, decl: LateValue, groups: dict[str, str]) -> tls.PrivateKey:
        return self._resource(
            decl, groups, lambda name, opts: tls.PrivateKey(name, algorithm="RSA", rsa_bits=RSA_BITS, opts=opts)
        )

    def _host_key(self, decl: LateValue, groups: dict[str, str]) -> tls.PrivateKey:
        return self.components[decl.parent].key(groups["host"], groups["type"])


def _password(late: LateValues, decl: LateValue, groups: dict[str, str]) -> pulumi.Output[str]:
    # Letters and digits only: no character a shell, YAML or borg could read differently.
    password = late._resource(
        decl, groups, lambda name, opts: random.RandomPassword(name, length=PASSWORD_LENGTH, special=False, opts=opts)
    )
    return pulumi.Output.secret(password.result)


def _config_secret(late: LateValues, decl: LateValue, _groups: dict[str, str]) -> pulumi.Output[str]:
    secret = pulumi.Config(PROJECT).require_secret(decl.source)
    return secret if decl.encode is None else secret.apply(lambda text: decl.encode(late.stack, text))


KINDS: dict[str, Callable[[LateValues, LateValue, dict[str, str]], pulumi.Output[str]]] = {
    "random-password": _password,
    "ssh-keypair-private": lambda late, d, g: pulumi.Output.secret(late._key(d, g).private_key_openssh),
    "ssh-keypair-public": lambda late, d, g: late._key(d, g).public_key_openssh.apply(lambda s: s.strip()),
    "config-secret": _config_secret,
    "host-key-private": lambda late, d, g: pulumi.Output.secret(late._host_key(d, g).private_key_openssh),
    "host-key-public": lambda late, d, g: late._host_key(d, g).public_key_openssh,
    "rsa-keypair-private": lambda late, d, g: pulumi.Output.secret(late._rsa_key(d, g).private_key_pem),
    "rsa-keypair-public": lambda late, d, g: late._rsa_key(d, g).public_key_pem.apply(
        lambda pem: pem if d.encode is None else d.encode(late.stack, pem)
    ),
}
# What each kind needs its declaration to say.
_NEEDS = {
    "random-password": ("resource", "parent"),
    "ssh-keypair-private": ("resource", "parent"),
    "ssh-keypair-public": ("resource", "parent"),
    "config-secret": ("source",),
    "host-key-private": ("parent",),
    "host-key-public": ("parent",),
    "rsa-keypair-private": ("resource",),
    "rsa-keypair-public": ("resource",),
}


def _declaration_problem(d: LateValue, components: Mapping[str, pulumi.Resource]) -> str | None:
    if d.kind not in KINDS:
        return f"unknown kind; components/late.py makes {', '.join(KINDS)}"
    missing = [f for f in _NEEDS[d.kind] if getattr(d, f) is None]
    if missing:
        return f"kind {d.kind} needs {' and '.join(missing)}"
    if d.parent is not None and d.parent not in components:
        return f"no component {d.parent!r} to hold its resources (components given: {', '.join(sorted(components))})"
    return None
